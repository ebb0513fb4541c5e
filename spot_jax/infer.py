"""`python -m spot_jax.infer --gin_file=... --gin.NAME=VALUE`: the infer job."""

import sys

from spot_jax import cli

if __name__ == "__main__":
    sys.exit(cli.run_gin_job("infer", sys.argv[1:]))
