# The PETAH Table 7 schedule for Food-101, the largest dataset: 100 epochs instead of 200.
_base_ = './fgvc_bs1024_adamw_200e.py'

train_cfg = dict(max_epochs=100)
