"""``visiontune tune``: an Optuna TPE study whose trials run as dvc experiments.

Ask-and-tell: the study (in Optuna storage) proposes params, each trial runs as
``dvc exp run -n <study>-<number> -S ... evaluate`` (``--temp``, or through DVC's queue),
its metrics are read back from the experiment's commit and told to the study. The study
survives interruption: re-running the same command resumes it until ``--trials`` trials
count (see :mod:`~visiontune.tuning.accounting`).

Several tuners (workers), each in its own clone on its own machine, can share one study
in a database server: each runs trials as experiments of its clone, marks them alive from
a heartbeat thread (:mod:`~visiontune.tuning.liveness`), settles the trials of a worker
that died, and stops once the study counts ``--trials`` trials.

Modules: ``tuner`` (``tune``: the study run to its end), ``options`` (what the command
line sets), ``study`` (storage, study, sampler), ``accounting`` (which trials count),
``space`` (``tune.space`` to suggestions), ``liveness`` (heartbeats, staleness),
``outcome`` (what became of an experiment, retry policy), ``dvc_queue`` (DVC's queue),
``gpu_slots`` (each running trial's own GPUs),
``trials`` (asking, completing, failing), ``runners`` (temp, queue, in-process),
``summary`` (best trial, plots, progress lines), ``run_cache`` (pruned stages out of DVC's
run-cache), ``trial_link`` (a trial's train stage reporting to its study),
``optuna_internals`` (the Optuna internals the others need, in one place).

May import: every layer below (experiments, evaluation, training, models, data, config).
"""
