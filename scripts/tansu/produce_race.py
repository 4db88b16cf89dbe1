"""Shows a tansu 0.6 broker bug: a consumer reading the head of a partition
that several producer connections write can skip a record for good.

tansu's `produce` (tansu-storage 0.6.0, dynostore.rs) first raises the
partition's high watermark to take the batch's offsets and only then stores
the batch; its `fetch` returns the stored batches below the high watermark,
from the requested offset on. A fetch that lands between another
connection's two steps gets the later batch, the consumer moves past the
earlier one, and never reads it. Apache Kafka appends under the partition
lock, so it cannot happen there.

Usage: python produce_race.py BOOTSTRAP [PRODUCERS] [RECORDS_EACH]
(needs confluent-kafka; each producer is a process of its own, with one
record per batch). Creates topic `race` (one partition), tails it while the
producers write, then reads it again from offset 0 and prints the offsets
the tail never saw. Exits 1 when it saw a skip. With PRODUCERS=1 tansu
serves the one connection's produces in order and nothing is skipped.
"""
import multiprocessing
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "race"


def produce(brokers, n, per):
    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                  "batch.num.messages": 1, "linger.ms": 0})
    for i in range(per):
        while True:
            try:
                p.produce(TOPIC, value=b"%d-%d" % (n, i), partition=0)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush()


def read(brokers, offsets, done=None):
    """Appends the offsets read from 0 on, until 10 s without a record
    (after `done`, when given)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "race-%f" % time.time(),
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    idle = 0
    while idle < 20:
        m = c.poll(0.5)
        if m is None:
            if done is None or done.is_set():
                idle += 1
            continue
        if m.error():
            print("consumer error:", m.error(), file=sys.stderr)
            continue
        idle = 0
        offsets.append(m.offset())
    c.close()


def main():
    brokers = sys.argv[1]
    producers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    admin = AdminClient({"bootstrap.servers": brokers})  # alive until the result
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result()

    tailed, done = [], threading.Event()
    tail = threading.Thread(target=read, args=(brokers, tailed, done))
    tail.start()
    # Not forked: a fork copies the tail's librdkafka locks mid-use.
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=produce, args=(brokers, n, per))
             for n in range(producers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    done.set()
    tail.join()

    everything = []
    read(brokers, everything)
    skipped = sorted(set(everything) - set(tailed))
    print(f"produced {producers * per}, read again {len(everything)}, "
          f"tail read {len(tailed)}, tail skipped {len(skipped)}: {skipped[:20]}")
    sys.exit(1 if skipped else 0)


if __name__ == "__main__":
    main()
