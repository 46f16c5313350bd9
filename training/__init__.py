"""Training of the proposers (LoRA SFT) and of the ACCEPT/REJECT verifier, driven by JSON recipes.

Modules: `recipes` (validated recipe files), `datasets` (SFT rows and verifier pairs from the train
split), `sft` (TRL fine-tuning), `verifier` (verifier training and `TrainedVerifier`), `loop`
(resume and Ctrl-C handling), `manifest` (base-model loading and manifests), `pipeline` (recipe runs).
Submodules import torch and transformers, so nothing is imported here.
"""
