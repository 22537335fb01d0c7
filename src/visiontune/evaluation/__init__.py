"""evaluation: scoring a trained model in the pipeline. The evaluate stage (``evaluate``)
and the robustness stage (``robustness``).

May import: the layers below (it uses models, data and config); never tuning or experiments.
"""
