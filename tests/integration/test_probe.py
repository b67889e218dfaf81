import time

import pytest
from integration.conftest import api_event


@pytest.mark.parametrize("i", range(3))
def test_probe(invoke, i):
    job = {"name": "a", "schedule": "*/5 * * * *", "script": "print('hi')\n"}
    for n in range(3):
        t = time.perf_counter()
        e = api_event("create_job", body={**job, "name": f"a{n}"})
        e["headers"].pop("idempotency-key")
        assert invoke("CreateJobFunction", e)["statusCode"] == 201
        print("create", time.perf_counter() - t)
    t = time.perf_counter()
    invoke("ListJobsFunction", api_event("list_jobs", query={}))
    print("list", time.perf_counter() - t)
    t = time.perf_counter()
    invoke("ListJobsFunction", api_event("list_jobs", query={}))
    print("list", time.perf_counter() - t)
