"""Knowledge distillation driver: training data, the student wrapper, QAT modules, the trainer, logs."""
