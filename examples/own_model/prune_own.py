import torch

import secateurs
from mymodels import ImagesAndLabels, small_resnet

# Any arrays will do; here Fashion-MNIST's, padded to 32x32 by secateurs' loader.
raw = {split: secateurs.load_dataset("fashion-mnist", split) for split in ("train", "test")}
mean, std = raw["train"].info.mean[0], raw["train"].info.std[0]
train_set = ImagesAndLabels(raw["train"].images[:, 0].numpy(), raw["train"].labels.numpy(), mean, std)
test_set = ImagesAndLabels(raw["test"].images[:1000, 0].numpy(), raw["test"].labels[:1000].numpy(), mean, std)

model = small_resnet()
secateurs.train(
    model, train_set, test_set, secateurs.TrainConfig(epochs=1, max_steps_per_epoch=40, num_workers=2, progress=False)
)
secateurs.save(
    model, "trained.safetensors", meta={"input_shape": [1, 32, 32], "normalisation": {"mean": [mean], "std": [std]}}
)

pruned, report = secateurs.prune(
    model,
    "l1",
    macs_reduction=0.5,
    train_set=train_set,
    test_set=test_set,
    example_inputs=torch.randn(1, 1, 32, 32),
    finetune_epochs=1,
    finetune_train={"max_steps_per_epoch": 20, "num_workers": 2},
    latency=False,
)
print(report.summary())

secateurs.save(pruned, "pruned.safetensors", meta={"input_shape": [1, 32, 32]})
loaded = secateurs.load("pruned.safetensors", arch=small_resnet)  # factory + stored shapes, no pickle
x = torch.randn(8, 1, 32, 32)
assert torch.equal(loaded.eval()(x), pruned.eval()(x))
print("reloaded:", secateurs.count_macs(loaded, (1, 32, 32)), "MACs")
