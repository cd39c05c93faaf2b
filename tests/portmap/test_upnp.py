from __future__ import annotations

import pytest

from natsync.portmap import upnp
from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable

DESCRIPTION = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
 <device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
  <deviceList><device><deviceList><device>
   <serviceList>
    <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
     <controlURL>/ctl/IPConn</controlURL></service>
   </serviceList>
  </device></deviceList></device></deviceList>
 </device>
</root>"""


def fault(code: int, description: str) -> bytes:
    return f"""<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>
<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{code}</errorCode>
<errorDescription>{description}</errorDescription></UPnPError></detail></s:Fault></s:Body>
</s:Envelope>""".encode()


def test_msearch_and_location() -> None:
    request = upnp.encode_msearch(upnp.SEARCH_TARGETS[0]).decode()
    assert request.startswith("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n")
    assert 'MAN: "ssdp:discover"' in request
    assert request.endswith("\r\n\r\n")
    answer = b"HTTP/1.1 200 OK\r\nST: x\r\nLocation: http://192.168.77.1:5000/rootDesc.xml\r\n\r\n"
    assert upnp.parse_ssdp_location(answer) == "http://192.168.77.1:5000/rootDesc.xml"
    assert upnp.parse_ssdp_location(b"NOTIFY * HTTP/1.1\r\n\r\n") is None
    assert upnp.parse_ssdp_location(b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/x\r\n\r\n") is None


def test_description_gives_absolute_control_url() -> None:
    service, control = upnp.parse_description(DESCRIPTION, "http://192.168.77.1:5000/rootDesc.xml")
    assert service == "urn:schemas-upnp-org:service:WANIPConnection:1"
    assert control == "http://192.168.77.1:5000/ctl/IPConn"


def test_description_without_wan_service() -> None:
    with pytest.raises(RouterUnreachable, match="no WAN connection service"):
        upnp.parse_description(b'<root xmlns="urn:schemas-upnp-org:device-1-0"/>', "http://r/")


def test_soap_request_escapes_arguments() -> None:
    body = upnp.encode_soap(
        "urn:x:service:WANIPConnection:1",
        "AddPortMapping",
        [("NewPortMappingDescription", "a<b&c")],
    ).decode()
    assert '<u:AddPortMapping xmlns:u="urn:x:service:WANIPConnection:1">' in body
    assert "<NewPortMappingDescription>a&lt;b&amp;c</NewPortMappingDescription>" in body


def test_soap_success_response() -> None:
    body = b"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">
<NewExternalIPAddress>192.0.3.10</NewExternalIPAddress></u:GetExternalIPAddressResponse>
</s:Body></s:Envelope>"""
    assert upnp.parse_soap_response(body, "GetExternalIPAddress") == {
        "NewExternalIPAddress": "192.0.3.10"
    }


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (606, "not allowed to be mapped"),
        (718, "already mapped to another computer"),
        (725, "only accepts permanent mappings"),
        (799, r"UPnP error 799 \(Vendor Thing\)"),
    ],
)
def test_faults_in_plain_words(code: int, words: str) -> None:
    with pytest.raises(MappingRefused, match=words) as caught:
        upnp.parse_soap_response(fault(code, "Vendor Thing"), "AddPortMapping")
    assert caught.value.code == code


def test_oversized_or_broken_xml() -> None:
    with pytest.raises(PortMapError, match="larger than"):
        upnp.parse_soap_response(b"<a>" + b"x" * upnp.MAX_HTTP_BODY + b"</a>", "X")
    with pytest.raises(PortMapError, match="does not parse"):
        upnp.parse_soap_response(b"<a>", "X")
    with pytest.raises(PortMapError, match="carries no XResponse"):
        upnp.parse_soap_response(b"<a/>", "X")


def test_a_garbled_mapping_entry_is_skipped_and_the_rest_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A router's entry whose port is no number ("²" passes str.isdigit, int() refuses it) is
    passed over; the list goes on to the next index until the router says there is none."""
    entries = [
        {"NewExternalPort": "443", "NewInternalPort": "8443", "NewProtocol": "TCP"},
        {"NewExternalPort": "4²3", "NewInternalPort": "x", "NewProtocol": "TCP"},
        {"NewExternalPort": "25", "NewProtocol": "TCP", "NewLeaseDuration": "9" * 5000},
        {"NewExternalPort": "587", "NewInternalPort": "587", "NewProtocol": "TCP"},
    ]

    def call(action: str, arguments: list[tuple[str, str]]) -> dict[str, str]:
        index = int(dict(arguments)["NewPortMappingIndex"])
        if index >= len(entries):
            raise upnp.MappingRefused(
                "no such entry", code=upnp.UpnpError.SPECIFIED_ARRAY_INDEX_INVALID
            )
        return entries[index]

    client = upnp.IgdClient("http://192.0.2.1/desc.xml", "urn:x", "http://192.0.2.1/ctl")
    monkeypatch.setattr(client, "call", call)
    assert [(m.external_port, m.internal_port) for m in client.mappings()] == [
        (443, 8443),
        (587, 587),
    ]
