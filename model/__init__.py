"""Training side of tagstream: data formats, the BERT-CRF model, training and evaluation."""
