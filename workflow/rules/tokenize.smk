# tokenizer.shared: one BPE from the train splits of every real corpus (a control's text
# is another corpus's, rearranged), which each corpus's tokenize job then loads.
rule shared_tokenizer:
    input:
        [f"results/{c}/corpus/train.parquet" for c in SHARED_TOKENIZER_CORPORA],
    output:
        tokenizer=SHARED_TOKENIZER,
        meta=os.path.join(os.path.dirname(SHARED_TOKENIZER), "meta.json"),
    params:
        corpora=" ".join(
            f"--corpus {c}=results/{c}/corpus/train.parquet" for c in SHARED_TOKENIZER_CORPORA
        ),
        tokenizer=as_json(config["tokenizer"]),
        out_dir=lambda w, output: os.path.dirname(output.tokenizer),
    log:
        "logs/shared_tokenizer.log",
    benchmark:
        "benchmarks/shared_tokenizer.tsv"
    threads: config["compute"]["threads"]
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling shared-tokenizer {params.corpora} --out-dir {params.out_dir:q}"
        " --tokenizer {params.tokenizer:q} --threads {threads}"
        + TO_LOG


rule tokenize:
    input:
        unpack(tokenize_inputs),
    output:
        tokenizer="results/{corpus}/tokens/tokenizer.json",
        train="results/{corpus}/tokens/train.bin",
        val="results/{corpus}/tokens/val.bin",
        meta="results/{corpus}/tokens/meta.json",
    params:
        tokenizer=as_json(config["tokenizer"]),
        out_dir=lambda w, output: os.path.dirname(output.meta),
        shared=lambda w, input: (
            f"--shared-tokenizer {input.shared}" if "shared" in input.keys() else ""
        ),
    log:
        "logs/{corpus}/tokenize.log",
    benchmark:
        "benchmarks/{corpus}/tokenize.tsv"
    threads: config["compute"]["threads"]
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling tokenize --corpus {wildcards.corpus} --train-docs {input.train:q}"
        " --val-docs {input.val:q} --out-dir {params.out_dir:q}"
        " --tokenizer {params.tokenizer:q} --threads {threads}"
        " {params.shared}"
        + TO_LOG


# One cheap check per data size, run first (priority), so that a D larger than the
# corpus fails before any model trains, naming the corpus and the key.
rule subset:
    input:
        meta="results/{corpus}/tokens/meta.json",
        train="results/{corpus}/tokens/train.bin",
    output:
        "results/{corpus}/tokens/subsets/D{tokens}.json",
    params:
        context=config["train"]["context"],
    log:
        "logs/{corpus}/subset/D{tokens}.log",
    benchmark:
        "benchmarks/{corpus}/subset/D{tokens}.tsv"
    priority: 100
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling subset --corpus {wildcards.corpus} --meta {input.meta:q}"
        " --train-bin {input.train:q} --tokens {wildcards.tokens} --context {params.context}"
        " --out {output:q}"
        + TO_LOG


# Every D of every corpus is checked before any model of any corpus trains: each train
# job waits for this table. Train jobs take it as ancient(), so a corpus or D added
# later re-runs the table, not the training already done.
rule data_grid:
    input:
        subset_files(),
    output:
        DATA_GRID,
    log:
        "logs/data_grid.log",
    benchmark:
        "benchmarks/data_grid.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling collect-subsets --out {output:q} {input:q}"
        + TO_LOG
