"""`python -m spot_jax.eval --gin_file=... --gin.NAME=VALUE`: the eval job."""

import sys

from spot_jax import cli

if __name__ == "__main__":
    sys.exit(cli.run_gin_job("eval", sys.argv[1:]))
