rule split:
    input:
        docs=CORPUS_DOCS,
    output:
        train="results/{corpus}/corpus/train.parquet",
        val="results/{corpus}/corpus/val.parquet",
    params:
        val_fraction=config["split"]["val_fraction"],
        seed=config["split"]["seed"],
    log:
        "logs/{corpus}/split.log",
    benchmark:
        "benchmarks/{corpus}/split.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling split --corpus {wildcards.corpus} --docs {input.docs:q}"
        " --train {output.train:q} --val {output.val:q}"
        " --val-fraction {params.val_fraction} --seed {params.seed}"
        + TO_LOG
