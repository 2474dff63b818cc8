"""The fitted models: regressors, mixing laws, the RegMix-D trajectory model, token entropy."""
