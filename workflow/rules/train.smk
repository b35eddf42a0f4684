rule train:
    input:
        train="results/{corpus}/tokens/train.bin",
        val="results/{corpus}/tokens/val.bin",
        meta="results/{corpus}/tokens/meta.json",
        subset="results/{corpus}/tokens/subsets/D{tokens}.json",
        grid=ancient(DATA_GRID),
    output:
        metrics=os.path.join(RUN_DIR, "metrics.json"),
        history=os.path.join(RUN_DIR, "history.csv"),
        weights=os.path.join(RUN_DIR, "model.safetensors"),
        model_config=os.path.join(RUN_DIR, "config.json"),
        snapshots=directory(os.path.join(RUN_DIR, "snapshots")),
    params:
        model=lambda w: as_json(config["models"][w.model]),
        train=TRAIN_RESULT,
        run_dir=lambda w, output: os.path.dirname(output.metrics),
    log:
        "logs/{corpus}/train/{model}_D{tokens}_s{seed}.log",
    benchmark:
        "benchmarks/{corpus}/train/{model}_D{tokens}_s{seed}.tsv"
    threads: config["compute"]["train_threads"]
    resources:
        gpu=config["compute"]["train_gpus"],
    conda:
        "../../envs/idscaling.yaml"
    # Resumable state lives in {run_dir}/ckpt/, which is not an output, so Snakemake
    # does not delete it before a re-run and the run resumes. With more than one GPU the
    # CLI takes free devices and relaunches itself under torchrun (DDP).
    shell:
        "idscaling train --train-bin {input.train:q} --val-bin {input.val:q}"
        " --meta {input.meta:q} --run-dir {params.run_dir:q} --model {params.model:q}"
        " --tokens {wildcards.tokens} --seed {wildcards.seed} --train {params.train:q}"
        " --engine {TRAIN_ENGINE:q}"
        " --threads {threads} --gpus {resources.gpu}"
        + TO_LOG
