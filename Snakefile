# idscaling: does the intrinsic dimension of a corpus predict how transformers scale on it?
# Entry point: `snakemake --cores all` runs config.yaml; `--configfile other.yaml` runs
# that file alone (see workflow/rules/common.smk for why it does not merge).

from snakemake.utils import min_version

min_version("8.0")


# A --configfile stands alone: loading config.yaml under it would merge the default
# corpora and grid into the user's experiment.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/intrinsic_dim.smk"
include: "workflow/rules/id_robustness.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/laws.smk"
include: "workflow/rules/known_d.smk"


# Downloads need the network, which cluster compute nodes often lack.
localrules:
    all,
    corpus,


report: "workflow/report/workflow.rst"


rule all:
    input:
        corpus_outputs(),
        known_d_outputs(),
    default_target: True
