"""`python -m spot_jax.train --gin_file=... --gin.NAME=VALUE`: the train job."""

import sys

from spot_jax import cli

if __name__ == "__main__":
    sys.exit(cli.run_gin_job("train", sys.argv[1:]))
