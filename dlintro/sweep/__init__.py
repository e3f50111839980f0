"""Hyperparameter sweeps: `dlintro sweep SWEEP.yaml` searches a config's keys with Optuna.

    space.py    the sweep file (a base config, the keys it changes, the `sweep:` section),
                validated like a config: file:line, did-you-mean, every searched value checked
    engines.py  Optuna's samplers and pruners by name, their parameters checked
    study.py    the study in its storage (SQLite in the sweep folder by default): joining it,
                the trial budget, stale trials of killed processes handed on for resuming
    trial.py    one trial as an ordinary dlintro run, reporting each validation to the pruner;
                the loop that runs trials until the budget is spent
    jobs.py     `--jobs K`: K worker processes on one machine, each with its share of the cores
    worker.py   the entry point of one worker process (`python -m dlintro.sweep.worker`)
    show.py     the trials table, the best config as YAML, the figure

Importing this package imports neither Optuna nor TensorFlow; the modules import them inside
the functions that need them (the CLI stays fast).
"""
