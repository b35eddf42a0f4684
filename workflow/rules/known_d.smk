# The known-dimension experiment: one job per arm, size, seed and estimator, then one
# analysis. The run jobs get only the keys that change a run; the analysis only its own.

rule known_d_run:
    output:
        record=layout.KNOWN_D_RECORD,
        excess=layout.KNOWN_D_RECORD.removesuffix(".json") + ".npy",
    wildcard_constraints:
        arm=r"d\d+-s[0-9.]+",
        estimator="|".join(KNOWN_D_ESTIMATOR_KEYS),
        docs=r"\d+",
    params:
        d=lambda w: known_d_arm(w.arm)["d"],
        s=lambda w: known_d_arm(w.arm)["s"],
        options=known_d_run_options,
    log:
        "logs/known_d/{arm}/n{docs}_s{seed}_{estimator}.log",
    benchmark:
        "benchmarks/known_d/{arm}/n{docs}_s{seed}_{estimator}.tsv"
    threads: (config.get("known_d") or {}).get("threads", 1)
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling known-d-run --d {params.d} --s {params.s} --docs {wildcards.docs}"
        " --seed {wildcards.seed} --estimator {wildcards.estimator}"
        " --options {params.options:q} --out {output.record:q} --threads {threads}"
        " --device {KNOWN_D_DEVICE}"
        + TO_LOG


rule known_d_laws:
    input:
        known_d_records(),
    output:
        runs=report("results/known_d/runs.csv", caption="../report/known_d.rst", category="Known dimension"),
        regime="results/known_d/regime.csv",
        exponents=report("results/known_d/exponents.csv", caption="../report/known_d.rst", category="Known dimension"),
        summary=report("results/known_d/summary.md", caption="../report/known_d.rst", category="Known dimension"),
        excess=report("results/figures/known_d_excess.png", caption="../report/known_d_excess.rst", category="Known dimension"),
        exponents_fig=report("results/figures/known_d_exponents.png", caption="../report/known_d_exponents.rst", category="Known dimension"),
        ids=report("results/known_d/ids.csv", caption="../report/known_d.rst", category="Known dimension"),
        ladder="results/known_d/ladder.csv",
        id_fig=report("results/figures/known_d_id.png", caption="../report/known_d_id.rst", category="Known dimension"),
    params:
        options=as_json({k: v for k, v in (config.get("known_d") or {}).items() if k in KNOWN_D_LAW_KEYS}),
    log:
        "logs/known_d/laws.log",
    benchmark:
        "benchmarks/known_d/laws.tsv"
    conda:
        "../../envs/idscaling.yaml"
    shell:
        "idscaling known-d-laws --out-dir results/known_d --fig-dir results/figures"
        " --options {params.options:q} {input:q}"
        + TO_LOG
