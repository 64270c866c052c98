"""trainmon.integrations: one line to adopt trainmon from a training framework.

Each module imports its framework only when it is itself imported (nothing else in trainmon imports them):

- `trainmon.integrations.lightning`: ``TrainmonLogger``, a Lightning ``Logger`` (``lightning`` or
  ``pytorch_lightning``);
- `trainmon.integrations.huggingface`: ``TrainmonCallback``, a ``transformers.TrainerCallback``;
- `trainmon.integrations.keras`: ``TrainmonKerasCallback``, a Keras 3 ``Callback``;
- `trainmon.integrations.torch`: ``watch(monitor, model, every=N)``, gradient and parameter norms and histograms.

Each takes an existing ``TrainingMonitor`` (``monitor=``) or creates one from ``TrainingMonitor``'s keyword
arguments. See docs/integrations/.
"""
