import json
from e2e.test_pipeline import *  # noqa
from e2e.test_pipeline import CREDENTIALS_SCRIPT, create_job, start_run, wait_for_end


def test_probe(local_stack):
    for kw in [
        dict(parameters={"greeting": "hello"}),
        dict(script=CREDENTIALS_SCRIPT, max_attempts=1),
        dict(script="import sys\nsys.exit(1)\n", max_attempts=2),
        dict(
            script="import sys\nfor _ in range(10):\n    sys.stdout.write('x' * 1024 * 1024)\nprint('END')\n"
        ),
    ]:
        job = create_job(local_stack, **kw)
        key = start_run(local_stack, job["job_id"])
        run = wait_for_end(local_stack, job["job_id"], key)
        if run.get("output_tail") and len(run["output_tail"]) > 300:
            run["output_tail"] = run["output_tail"][-100:]
        print(json.dumps(run, indent=1))
