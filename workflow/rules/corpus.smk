rule corpus:
    input:
        unpack(corpus_inputs),
    output:
        docs=CORPUS_DOCS,
        meta="results/{corpus}/corpus/meta.json",
    params:
        spec=lambda w: as_json(corpus_source(w.corpus)),
        cache="resources/corpora/{corpus}",
        base=lambda w, input: f"--base-docs {input.base}" if "base" in input.keys() else "",
    log:
        "logs/{corpus}/corpus.log",
    benchmark:
        "benchmarks/{corpus}/corpus.tsv"
    threads: 1
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling corpus --name {wildcards.corpus} --spec {params.spec:q}"
        " --out-docs {output.docs:q} --out-meta {output.meta:q}"
        " --cache-dir {params.cache:q} --threads {threads} {params.base}"
        + TO_LOG
