from __future__ import annotations

from integration.conftest import api_event, body_of


def test_create_then_get(invoke) -> None:
    job = {"name": "a", "schedule": "*/5 * * * *", "script": "print('hi')\n"}
    created = invoke("CreateJobFunction", api_event("create_job", body=job))
    print(created)
    assert created["statusCode"] == 201
    job_id = body_of(created)["job_id"]
    got = invoke(
        "GetJobFunction",
        api_event("get_job", path=f"/jobs/{job_id}", path_parameters={"job_id": job_id}),
    )
    print(got)
    assert got["statusCode"] == 200
    listed = invoke("ListJobsFunction", api_event("list_jobs", query={}))
    print(listed)
    assert body_of(listed)["items"][0]["job_id"] == job_id
