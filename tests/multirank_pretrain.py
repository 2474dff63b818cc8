"""One rank of a multi-rank `litgpt pretrain --config FILE` on CPU, for tests/test_multirank.py.

    torchrun --standalone --nproc_per_node 2 tests/multirank_pretrain.py run/pretrain_config.yaml

The stock loop (`litgpt.__main__` with the argv its save_checkpoint re-parses) with two test-only changes:
DDP over gloo instead of the FSDP that Fabric refuses on CPU (``ddp_instead_of_fsdp_for_tests``), and no
torch.compile (``eager_pretrain``: ~15 s per rank saved; the data path is the same either way).
"""

import sys

from regmix_plugin.litgpt_compat import ddp_instead_of_fsdp_for_tests, eager_pretrain, run_pretrain

if __name__ == "__main__":
    with ddp_instead_of_fsdp_for_tests(), eager_pretrain():
        run_pretrain(sys.argv[1])
