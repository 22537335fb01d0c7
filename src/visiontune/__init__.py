"""visiontune: image-classification experiments driven by DVC."""
