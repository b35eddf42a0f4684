rule laws:
    input:
        losses="results/losses.csv",
        ids="results/intrinsic_dim.csv",
        histories="results/histories.csv",
        robustness=["results/id_robustness.csv"] if robustness_enabled() else [],
    output:
        laws=report("results/laws.csv", caption="../report/laws.rst", category="Tables"),
        predictions=report(
            "results/predictions.csv", caption="../report/laws.rst", category="Tables"
        ),
        summary=report("results/summary.md", caption="../report/summary.rst", category="Summary"),
        figures=[
            report(
                f"results/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in figure_names()
        ],
    params:
        laws=as_json(config["laws"]),
        theory=as_json(config["theory"]),
        k=config["intrinsic_dim"]["k"],
        out_dir=lambda w, output: os.path.dirname(output.laws),
        robustness=lambda w, input: (
            f"--robustness {input.robustness[0]}" if input.robustness else ""
        ),
    log:
        "logs/laws.log",
    benchmark:
        "benchmarks/laws.tsv"
    threads: 1
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling laws --losses {input.losses:q} --ids {input.ids:q}"
        " --out-dir {params.out_dir:q} --laws {params.laws:q} --theory {params.theory:q}"
        " --k {params.k} --histories {input.histories:q}"
        " {params.robustness}"
        + TO_LOG
