"""Validate a config against the schema, fill its defaults, and check what a schema cannot.

The workflow calls `validate_config` before it builds the DAG, so a bad config fails
before any job runs, with the key path and the reason.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from idscaling.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
# train: keys that change how a run goes, not what it computes: a run's identity (its
# checkpoint signature) and the workflow's re-run decisions leave them out.
NON_RESULT_TRAIN_KEYS = ("compile", "checkpoint_every", "log_every", "peak_flops")
# known_d: the keys that define an arm's generator (besides its d and s): every run of the
# arm and its analysis read them.
KNOWN_D_TASK_KEYS = ("field_seed", "vocab", "symbols", "temperature", "noise", "levels", "max_modes",
                     "level_ratio", "base", "digits")


def load_schema(path: str | Path | None = None) -> dict:
    path = Path(path) if path else SCHEMA_PATH
    return yaml.safe_load(path.read_text())


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return load_schema()


def _with_defaults(validator_class):
    """A validator that fills `default` values in as it descends (missing sections included)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _best_error(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    # if/then and oneOf wrap the useful error; descend to the deepest, most specific one.
    error = jsonschema.exceptions.best_match(errors)
    while error.context:
        error = jsonschema.exceptions.best_match(error.context)
    return error


def validate_config(config: dict, schema: dict | str | Path | None = None) -> dict:
    """Validate `config` in place, fill schema defaults, and return it.

    Raises ConfigError naming the key path (e.g. ``corpora.my/corpus``) and the reason.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    _check_schema(config, schema)
    _check_semantics(config)
    return config


def validate_section(section: str, values: dict | None) -> dict:
    """One section of the config (train, embedding, ...) checked against the schema and
    with its defaults, for callers of the library that bypass the workflow. Returns a
    copy; raises ConfigError naming the key (``train.lr``)."""
    schema = _schema()
    one = {"$defs": schema.get("$defs", {}), "type": "object", "additionalProperties": False,
           "properties": {section: schema["properties"][section]}}
    config = {section: _copy(dict(values or {}))}
    _check_schema(config, one)
    return config[section]


def data_size_problem(tokens: int, context: int, train_tokens: int | None = None,
                      corpus: str = "") -> str | None:
    """Why a data size D cannot be trained on, or None: it must hold one training window
    (more than train.context tokens) and, when the corpus's train tokens are known, fit in
    them. The one owner of this rule: the config check, the subset check and the engine."""
    where = f"corpus {corpus}: " if corpus else ""
    if tokens <= context:
        return (f"{where}data_tokens {tokens:,} is not more than train.context {context:,}: "
                "not one training window")
    if train_tokens is not None and tokens > train_tokens:
        return f"corpus {corpus or '?'} has {train_tokens:,} train tokens; data_tokens asks for {tokens:,}"
    return None


def check_micro_batch(batch_size: int, micro_batch_size: int | None) -> None:
    """A micro-batch must divide the batch (gradients accumulate to it)."""
    if micro_batch_size and batch_size % micro_batch_size:
        raise ConfigError(f"config: train.micro_batch_size ({micro_batch_size}) does not "
                          f"divide train.batch_size ({batch_size})")


def _check_schema(config: dict, schema: dict) -> None:
    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a mapping, got {type(config).__name__}")
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = _best_error(errors)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(allowed))
            where = _key_path(error)
            keys = ", ".join(f"{where}.{k}" if where != "(top level)" else k for k in extra)
            raise ConfigError(f"config: unknown key {keys}; allowed here: {', '.join(allowed)}")
        raise ConfigError(f"config: {_key_path(error)}: {error.message}")


def _check_semantics(config: dict) -> None:
    if not config["corpora"] and not config.get("known_d"):
        raise ConfigError("config: nothing to run: give corpora, known_d, or both")
    known_d = config.get("known_d") or {}
    for key, of, what in (("width_docs", "docs", "sizes"), ("width_seeds", "seeds", "seeds")):
        stray = sorted(set(known_d.get(key) or ()) - set(known_d.get(of) or ()))
        if stray:
            raise ConfigError(f"config: known_d.{key}: {stray} not in known_d.{of} "
                              f"(the wide control pairs with the network at the same {what})")
    if config["corpora"]:
        for key in ("models", "data_tokens"):
            if not config.get(key):
                raise ConfigError(f"config: {key} is required when corpora are given")
    for name, shape in config["models"].items():
        if shape["n_embd"] % shape["n_head"]:
            raise ConfigError(
                f"config: models.{name}: n_embd ({shape['n_embd']}) is not divisible "
                f"by n_head ({shape['n_head']})"
            )
    train = config["train"]
    check_micro_batch(train["batch_size"], train.get("micro_batch_size"))
    grids = [("data_tokens", config.get("data_tokens", []))] + [
        (f"corpora.{name}.data_tokens", spec["data_tokens"])
        for name, spec in config["corpora"].items() if "data_tokens" in spec
    ]
    budget = train["max_steps"] * train["batch_size"] * train["context"]
    for key, grid in grids:
        if grid and max(grid) > budget:
            # a run that cannot see its data once is compute-limited, not data-limited
            raise ConfigError(
                f"config: {key}: D = {max(grid)} tokens is more than one run can see: "
                f"train.max_steps x batch_size x context = {train['max_steps']} x "
                f"{train['batch_size']} x {train['context']} = {budget} tokens; raise the "
                "budget or stop the grid there")
        for d in grid:
            problem = data_size_problem(d, train["context"])
            if problem:
                raise ConfigError(f"config: {key}: {problem}")
    tok = config["tokenizer"]
    if tok["kind"] == "pretrained" and not tok.get("name"):
        raise ConfigError("config: tokenizer.name is required when tokenizer.kind is pretrained")
    if tok["shared"] and tok["kind"] != "bpe":
        raise ConfigError("config: tokenizer.shared applies to kind: bpe; a pretrained "
                          "tokenizer is already the same for every corpus")
    for name, spec in config["corpora"].items():
        if spec["source"] == "control":
            base = config["corpora"].get(spec["of"])
            if base is None:
                raise ConfigError(f"config: corpora.{name}.of: {spec['of']!r} is not a corpus "
                                  f"of this config ({', '.join(config['corpora'])})")
            if base["source"] == "control":
                raise ConfigError(f"config: corpora.{name}.of: {spec['of']!r} is itself a "
                                  "control; a control derives from a real corpus")
    if config["id_robustness"]["enabled"] and config["embedding"]["model"] != "trained":
        raise ConfigError(
            f"config: id_robustness measures the ID with every trained model and needs "
            f"embedding.model: trained, not {config['embedding']['model']!r}; set "
            "id_robustness.enabled: false to embed with another model")
    run = config["embedding"].get("run")
    if run and run.split("/")[0] not in config["models"]:
        raise ConfigError(f"config: embedding.run: model {run.split('/')[0]!r} is not in models")
