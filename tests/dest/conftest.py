from tests.servers.fixtures import *  # noqa: F401,F403  (tansu, nats_server, valkey_server, seaweed_s3, nsqd_double)
