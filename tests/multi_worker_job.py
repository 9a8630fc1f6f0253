"""One worker of tests/test_multi_worker.py (run as a script, TF_CONFIG in its environment):
``multi_worker_job.py CONFIG_JSON [DIE_AT_STEP]``. With DIE_AT_STEP the non-chief worker exits
abruptly (os._exit: no clean-up, like a pre-empted machine) when training reaches that step's
checkpoint. Prints the training summary as its last line."""
import json
import os
import sys

if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    die_at = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    from recface_lib.train import trainer

    if die_at:
        orig = trainer.TrainRun.checkpoint

        def checkpoint(self, step, si, seg):
            orig(self, step, si, seg)
            if step == die_at and not self.chief:
                os._exit(3)
        trainer.TrainRun.checkpoint = checkpoint
    print(json.dumps(trainer.train(cfg, show_progress=False), default=str))
