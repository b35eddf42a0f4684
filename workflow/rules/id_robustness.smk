# The ID against model size, training step and context position (Havrilla & Liao's
# robustness checks), measured with the reference estimator.
rule id_robustness:
    input:
        unpack(robustness_inputs),
    output:
        layout.ROBUSTNESS_FILE,
    params:
        runs=robustness_runs,
        fill=lambda w, input: (
            f"--train-docs {input.train} --seen {input.seen}" if "train" in input.keys() else ""
        ),
        embedding=EMBED_OPTIONS,
        id_options=as_json(
            {**config["intrinsic_dim"], "estimator": config["theory"]["estimator"],
             "protocol": config["theory"]["protocol"]}
        ),
        robustness=as_json(config["id_robustness"]),
        context=config["train"]["context"],
    log:
        "logs/{corpus}/id_robustness.log",
    benchmark:
        "benchmarks/{corpus}/id_robustness.tsv"
    threads: config["compute"]["threads"]
    resources:
        gpu=config["compute"]["embed_gpus"],
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling id-robustness --emb-dir {input.emb_dir:q} --out {output:q}"
        " --snapshots {input.snapshots:q} --val-docs {input.val:q}"
        " --tokenizer {input.tokenizer:q} {params.runs} {params.fill}"
        " --embedding {params.embedding:q} --id-options {params.id_options:q}"
        " --options {params.robustness:q} --context {params.context}"
        " --threads {threads} --gpus {resources.gpu}"
        + TO_LOG


rule collect_robustness:
    input:
        robustness_files(),
    output:
        report(
            "results/id_robustness.csv",
            caption="../report/id_robustness_table.rst",
            category="Tables",
        ),
    log:
        "logs/collect_robustness.log",
    benchmark:
        "benchmarks/collect_robustness.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling collect-robustness --out {output:q} {input:q}"
        + TO_LOG
