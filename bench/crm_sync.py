"""HubSpot outbox throughput against direct API calls, both against the fake HubSpot.

    python bench/crm_sync.py [--leads 300] [--rounds 3]

Real path: for each lead, ``sync_job_enqueue_contact`` writes the SyncJob in a
transaction, then ``sync_job_process`` claims it (SELECT ... FOR UPDATE SKIP LOCKED),
upserts the contact over HTTP (httpx, the real client) and records the outcome.
Baseline, in the same run: the same upserts by ``HubSpotClient.contact_upsert_by_email``
and nothing else. Both talk to the local fake HubSpot server of the tests, so the
ratio is the cost of the outbox's bookkeeping (what buys "never lost, never twice")
relative to a bare HTTP round trip on loopback; against the real HubSpot, whose
round trip is ~100x longer, the relative cost is far smaller. It runs in the
separate benchmark database (bench/_django.py) and deletes what it created.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._django import bench_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with bench_database():
        import logging

        from django.conf import settings
        from django.db import transaction

        from bots.models import Bot
        from chatbase.core.models import User
        from crm.hubspot import HubSpotClient
        from crm.models import HubSpotConnection, SyncJob
        from crm.services.sync import contact_properties, sync_job_enqueue_contact
        from crm.tests.fake_hubspot import FakeHubSpot, _respond
        from crm.tests.http_fake import serve, stop
        from leads.models import Lead

        fake = FakeHubSpot()
        server, fake.url = serve(_respond(fake))
        settings.HUBSPOT_API_BASE = fake.url
        settings.HUBSPOT_ACCESS_TOKEN = "pat-bench"
        # Jobs run in-process at commit, never through a broker (see below).
        settings.CELERY_TASK_ALWAYS_EAGER = True
        logging.getLogger("celery").setLevel(logging.WARNING)
        logging.getLogger("crm").setLevel(logging.WARNING)
        owner = User.objects.create(email=f"bench-{uuid.uuid4().hex[:8]}@example.com")
        bot = Bot.objects.create(owner=owner, name="crm bench")
        client = HubSpotClient("pat-bench")
        ratios = []
        try:
            for round_number in range(1, args.rounds + 1):
                tag = uuid.uuid4().hex[:8]
                leads = [
                    Lead.objects.create(bot=bot, email=f"{tag}-{i}@example.com", name=f"Lead {i}", score=i % 100)
                    for i in range(args.leads)
                ]
                start = time.perf_counter()
                for lead in leads:
                    client.contact_upsert_by_email(email=f"direct-{lead.email}", properties=contact_properties(lead))
                direct = args.leads / (time.perf_counter() - start)

                start = time.perf_counter()
                for lead in leads:
                    # Without a broker the task runs at commit, in this process: enqueue,
                    # claim, upsert, record, as a worker would.
                    with transaction.atomic():
                        sync_job_enqueue_contact(lead=lead)
                outbox = args.leads / (time.perf_counter() - start)
                done = SyncJob.objects.filter(lead__in=leads, status="done").count()
                assert done == args.leads, f"{done} of {args.leads} jobs done"
                ratios.append(outbox / direct)
                print(
                    f"round {round_number}: direct {direct:7.1f} upserts/s, outbox {outbox:7.1f} jobs/s, "
                    f"ratio {outbox / direct:.2f}"
                )
            print(f"median ratio outbox/direct over {args.rounds} rounds: {statistics.median(ratios):.2f}")
            print(f"contacts in the fake HubSpot: {len(fake.contacts)} for {2 * args.leads * args.rounds} upserts")
        finally:
            stop(server)
            Lead.objects.filter(bot=bot).delete()
            HubSpotConnection.objects.filter(owner=owner).delete()
            bot.delete()
            owner.delete()


if __name__ == "__main__":
    main()
