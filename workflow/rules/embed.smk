rule embed:
    input:
        unpack(embed_inputs),
    output:
        directory("results/{corpus}/embeddings/{embedder}"),
    params:
        model=embedding_model,
        tokenizer=lambda w, input: input.get("tokenizer", ""),
        fill=lambda w, input: (
            f"--train-docs {input.train} --seen {input.seen}" if "train" in input.keys() else ""
        ),
        embedding=EMBED_OPTIONS,
        context=config["train"]["context"],
    log:
        "logs/{corpus}/embed/{embedder}.log",
    benchmark:
        "benchmarks/{corpus}/embed/{embedder}.tsv"
    threads: config["compute"]["threads"]
    resources:
        gpu=config["compute"]["embed_gpus"],
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling embed --model {params.model:q} --val-docs {input.val:q}"
        " --tokenizer {params.tokenizer:q} --out-dir {output:q} {params.fill}"
        " --options {params.embedding:q} --context {params.context}"
        " --threads {threads} --gpus {resources.gpu}"
        + TO_LOG
