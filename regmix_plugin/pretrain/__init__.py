"""What runs inside the stock `litgpt pretrain` loop: MixtureData, its stream, the RegMix-D controller."""
