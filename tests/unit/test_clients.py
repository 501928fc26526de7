"""Which Kafka start failures are worth waiting for, told from the causes aiokafka logs."""

from __future__ import annotations

import logging
import ssl

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from stream.service.clients import KafkaCauses, retriable

BOOTSTRAP_FAILED = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")


def _aiokafka_logs_cause(cause: BaseException) -> None:
    # What aiokafka's client logs for each bootstrap server before raising a bare connection error.
    logging.getLogger("aiokafka").error('Unable connect to "%s:%s": %s', "127.0.0.1", 9092, cause)


@pytest.mark.parametrize("cause, wait", [
    (ConnectionRefusedError(111, "Connect call failed"), True),
    (OSError(-2, "Name or service not known"), True),                   # DNS not there yet (a new pod)
    (SaslAuthenticationFailed("Authentication failed"), False),
    (UnsupportedSaslMechanismError("SCRAM-SHA-256"), False),
    (ssl.SSLCertVerificationError("certificate verify failed"), False),
])
def test_unreachable_is_retried_and_refused_credentials_are_not(cause, wait):
    with KafkaCauses() as causes:
        _aiokafka_logs_cause(cause)
    assert retriable(BOOTSTRAP_FAILED, causes) is wait
    assert causes.why(BOOTSTRAP_FAILED) == str(cause)


def test_swallowed_causes_stay_out_of_the_log_and_other_lines_do_not(caplog):
    caplog.set_level(logging.INFO)
    with KafkaCauses(swallow=True) as causes:
        _aiokafka_logs_cause(ConnectionRefusedError(111, "Connect call failed"))
        logging.getLogger("aiokafka").warning("Topic %s not found in cluster metadata", "t")
    _aiokafka_logs_cause(ConnectionRefusedError(111, "after the block"))
    assert [r.getMessage() for r in caplog.records] == [
        "Topic t not found in cluster metadata", 'Unable connect to "127.0.0.1:9092": [Errno 111] after the block']
    assert len(causes.causes) == 1


def test_without_a_logged_cause_the_error_speaks_for_itself():
    with KafkaCauses() as causes:
        pass
    assert retriable(BOOTSTRAP_FAILED, causes)
    assert causes.why(BOOTSTRAP_FAILED) == str(BOOTSTRAP_FAILED)
    assert not retriable(ValueError("not Kafka"), causes)
