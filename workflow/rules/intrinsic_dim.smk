rule intrinsic_dim:
    input:
        "results/{corpus}/embeddings/{embedder}",
    output:
        layout.ID_FILE,
    params:
        options=as_json(config["intrinsic_dim"]),
    log:
        "logs/{corpus}/intrinsic_dim/{embedder}.log",
    benchmark:
        "benchmarks/{corpus}/intrinsic_dim/{embedder}.tsv"
    threads: config["compute"]["threads"]
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling intrinsic-dim --emb-dir {input:q} --out {output:q}"
        " --options {params.options:q} --threads {threads}"
        + TO_LOG
