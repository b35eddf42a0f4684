rule corpus:
    output:
        docs="results/{corpus}/corpus/docs.parquet",
        meta="results/{corpus}/corpus/meta.json",
    params:
        spec=lambda w: as_json(corpus_source(w.corpus)),
        cache="resources/corpora/{corpus}",
    log:
        "logs/{corpus}/corpus.log",
    benchmark:
        "benchmarks/{corpus}/corpus.tsv"
    threads: 1
    conda:
        "../../envs/analysis.yaml"
    shell:
        "idscaling corpus --name {wildcards.corpus} --spec {params.spec:q}"
        " --out-docs {output.docs:q} --out-meta {output.meta:q}"
        " --cache-dir {params.cache:q} --threads {threads} > {log:q} 2>&1"
