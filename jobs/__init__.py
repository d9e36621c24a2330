"""The job service of the batch path, between the database (`db`) and the Celery workers (`worker`).

`submit` (submit a folder, resume a job), `progress` (a job's progress and the one definition of its rate, waiting
for it), `fleet` (workers, queue and running jobs at a glance, why a job stalls), `heal` (the fleet heals stalled
jobs, or fails them with the reason), `failure` (how a chunk no worker can run still ends), `storage` (where
images live: a folder or an fsspec URL such as s3://, listed at submit and read by the workers; bundle URLs cached
per host) and `broker` (the Protocol of what the service asks a task broker; `worker.broker.RedisBroker` implements
it). Nothing here imports Celery, kombu or Redis, reads the settings or imports TensorFlow: callers pass plain
values and a broker.
"""
