"""Worked examples that use the package as a user would: `your_model` is notebook 08's, MFW's forward hook on a
model we did not write, trained by a plain PyTorch loop."""
