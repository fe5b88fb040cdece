"""Data: synthetic long-range tasks (`rnnlab.data.synthetic`) and language-model corpora."""
