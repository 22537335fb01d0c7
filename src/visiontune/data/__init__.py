"""Images from a data.source to model-ready batches."""
