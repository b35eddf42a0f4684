# Two collectors, so that an ID change re-collects IDs and never touches the losses.
rule collect_losses:
    input:
        metrics_files(),
    output:
        report(
            "results/losses.csv",
            caption="../report/losses.rst",
            category="Tables",
        ),
    log:
        "logs/collect_losses.log",
    benchmark:
        "benchmarks/collect_losses.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling collect-losses --out {output:q} {input:q}"
        + TO_LOG


rule collect_histories:
    input:
        history_files(),
    output:
        "results/histories.csv",
    log:
        "logs/collect_histories.log",
    benchmark:
        "benchmarks/collect_histories.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling collect-histories --out {output:q} {input:q}"
        + TO_LOG


rule collect_ids:
    input:
        id_files(),
    output:
        report(
            "results/intrinsic_dim.csv",
            caption="../report/intrinsic_dim.rst",
            category="Tables",
        ),
    log:
        "logs/collect_ids.log",
    benchmark:
        "benchmarks/collect_ids.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling collect-ids --out {output:q} {input:q}"
        + TO_LOG
