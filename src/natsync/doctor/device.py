"""The doctor's own test device: how it is marked, so that it does not pass for one of the
user's phones. It sends ``DeviceType=NatsyncDoctor`` (and ``DeviceId=NATSYNCDOCTOR01``);
`natsync device list` leaves such devices out unless asked (``--all``), and an inside-out run
(``--config`` with a [server] table) removes the device from the account when it is done."""

from __future__ import annotations

DOCTOR_DEVICE_ID = "NATSYNCDOCTOR01"
#: MS-ASCMD DeviceType: at most 32 printable characters; this one names the doctor.
DOCTOR_DEVICE_TYPE = "NatsyncDoctor"


def is_doctor_device(device_id: str, device_type: str) -> bool:
    """Whether a device in the store is the doctor's test device (DeviceIds are compared
    without case, as the server stores them per user)."""
    return device_type == DOCTOR_DEVICE_TYPE and device_id.upper() == DOCTOR_DEVICE_ID
