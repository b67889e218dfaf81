"""The in-memory stores most unit tests start from: fresh for each test, the job, run and
schedule stores sharing one schedule (as the tables share transactions in DynamoDB). A module
that needs another start (its own jobs, a clock of its own) defines that fixture itself."""

import pytest

from unit.fakes import FakeJobStore, FakeRunObjects, FakeRunQueue, FakeRunStore, FakeScheduleStore


@pytest.fixture
def schedule() -> FakeScheduleStore:
    return FakeScheduleStore()


@pytest.fixture
def jobs(schedule: FakeScheduleStore) -> FakeJobStore:
    return FakeJobStore(schedule)


@pytest.fixture
def runs(schedule: FakeScheduleStore) -> FakeRunStore:
    return FakeRunStore(schedule)


@pytest.fixture
def queue() -> FakeRunQueue:
    return FakeRunQueue()


@pytest.fixture
def objects() -> FakeRunObjects:
    return FakeRunObjects()
