"""The schema is the one source of defaults: every library entry point that a rule calls
takes, for a keyword it shares with the schema, the schema's default, so a direct caller
gets what a workflow user gets."""

import inspect
from dataclasses import fields

import pytest

from idscaling.config import load_schema
from idscaling.corpus import DEFAULT_CLEAN, split_corpus
from idscaling.embed import embed_corpus
from idscaling.id_robustness import run_robustness
from idscaling.intrinsic_dim import ESTIMATORS, run_id_stage
from idscaling.laws_stage import run_laws
from idscaling.predictions import DEFAULT_MARGIN, DEFAULT_REFERENCE
from idscaling.tokenization import tokenize_corpus, train_shared_tokenizer
from idscaling.schedule import TrainSettings

SCHEMA = load_schema("workflow/schemas/config.schema.yaml")


def schema_defaults(section: str) -> dict:
    props = SCHEMA["properties"][section]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def keyword_defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


# (schema section, library entry point, schema key -> keyword where the names differ)
ENTRY_POINTS = [
    ("split", split_corpus, {}),
    ("tokenizer", tokenize_corpus, {}),
    ("tokenizer", train_shared_tokenizer, {}),
    ("embedding", embed_corpus, {}),
    ("intrinsic_dim", run_id_stage, {}),
    ("id_robustness", run_robustness, {}),
    ("laws", run_laws, {"loss": "loss_column"}),
]


@pytest.mark.parametrize("section, function, renamed", ENTRY_POINTS,
                         ids=[f"{e[0]}-{e[1].__name__}" for e in ENTRY_POINTS])
def test_library_defaults_are_the_schemas(section, function, renamed):
    schema, library = schema_defaults(section), keyword_defaults(function)
    shared = {key: renamed.get(key, key) for key in schema if renamed.get(key, key) in library}
    assert shared, f"{function.__name__} shares no keyword with {section}"
    differ = {key: (schema[key], library[kw]) for key, kw in shared.items()
              if _normal(schema[key]) != _normal(library[kw])}
    assert not differ, f"{section}: schema vs {function.__name__} defaults {differ}"


def test_train_settings_defaults_are_the_schemas():
    schema = schema_defaults("train")
    library = {f.name: f.default for f in fields(TrainSettings)}
    assert set(library) <= set(schema), set(library) - set(schema)
    differ = {k: (schema[k], library[k]) for k in library if schema[k] != library[k]}
    assert not differ


def test_theory_defaults_and_estimators_are_the_schemas():
    theory = schema_defaults("theory")
    assert theory["margin"] == DEFAULT_MARGIN
    assert (theory["estimator"], theory["protocol"]) == (DEFAULT_REFERENCE["estimator"],
                                                         DEFAULT_REFERENCE["protocol"])
    assert schema_defaults("intrinsic_dim")["k"] == DEFAULT_REFERENCE["k"]
    assert SCHEMA["$defs"]["estimator"]["enum"] == list(ESTIMATORS)


def test_cleaning_defaults_are_the_schemas():
    clean = {k: v["default"] for k, v in SCHEMA["$defs"]["clean"]["properties"].items()}
    assert DEFAULT_CLEAN == clean


def _normal(value):
    return list(value) if isinstance(value, tuple) else value
