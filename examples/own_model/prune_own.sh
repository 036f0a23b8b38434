# mymodels.py is in the current folder (or on PYTHONPATH); trained.safetensors from secateurs.save
secateurs prune --arch mymodels:small_resnet --from trained.safetensors --dataset fashion-mnist \
    --method l1 --macs-reduction 0.5 --finetune-epochs 1 --finetune-max-steps-per-epoch 20 --no-latency \
    --out runs/mine
secateurs eval --arch mymodels:small_resnet --from runs/mine/model.safetensors
secateurs measure --arch mymodels:small_resnet --from runs/mine/model.safetensors --no-latency
