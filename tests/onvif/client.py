"""ONVIF client side of tests/onvif.rs, with the libraries NVRs' tooling uses.

  client.py discover PORT          unicast WS-Discovery probe to 127.0.0.1:PORT (WSDiscovery)
  client.py media HOST PORT USER PASSWORD
                                   device information, profiles, stream and snapshot URIs
                                   (onvif-zeep); a refused login prints {"refused": reason}

Prints one JSON object on stdout.
"""
import json
import os
import selectors
import sys


def discover(port):
    import wsdiscovery.threaded as threaded
    from wsdiscovery.discovery import ThreadedWSDiscovery
    from wsdiscovery import QName

    # IPv6 is not what is tested here, and the v6 thread would also probe over ::1.
    class NoIPv6(threaded.NetworkingThreadIPv6):
        def __init__(self, observer):
            raise OSError("IPv6 switched off for a loopback test")

    threaded.NetworkingThreadIPv6 = NoIPv6
    wsd = ThreadedWSDiscovery()
    wsd.start()
    try:
        # WSDiscovery 2.1.2 sends unicast probes from a socket its read loop does not watch,
        # so the ProbeMatch would be dropped unread: watch it.
        net = wsd._networkingThread_v4
        net._selector.register(net._uniOutSocket, selectors.EVENT_READ)
        types = [QName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn")]
        found = wsd.searchServices(types=types, address="127.0.0.1", port=port, timeout=3)
        out = [
            {
                "epr": s.getEPR(),
                "xaddrs": list(s.getXAddrs()),
                "scopes": [str(x.getValue()) for x in s.getScopes()],
                "types": [t.getLocalname() for t in s.getTypes()],
            }
            for s in found
        ]
    finally:
        wsd.stop()
    print(json.dumps({"services": out}))


def media(host, port, user, password):
    from onvif import ONVIFCamera
    from onvif.exceptions import ONVIFError

    try:
        cam = ONVIFCamera(host, int(port), user, password, no_cache=True)
        info = cam.devicemgmt.GetDeviceInformation()
    except ONVIFError as e:
        print(json.dumps({"refused": str(e)}))
        return
    scopes = [s.ScopeItem for s in cam.devicemgmt.GetScopes()]
    services = [s.Namespace for s in cam.devicemgmt.GetServices({"IncludeCapability": False})]
    interfaces = [
        {"name": i.Info.Name, "ipv4": [a.Address for a in (i.IPv4.Config.Manual or [])]}
        for i in cam.devicemgmt.GetNetworkInterfaces()
    ]
    clock = cam.devicemgmt.GetSystemDateAndTime().UTCDateTime.Date.Year
    m = cam.create_media_service()
    profiles = []
    for p in m.GetProfiles():
        enc = p.VideoEncoderConfiguration
        setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        uri = m.GetStreamUri({"StreamSetup": setup, "ProfileToken": p.token}).Uri
        snap = m.GetSnapshotUri({"ProfileToken": p.token}).Uri
        profiles.append(
            {
                "token": p.token,
                "name": p.Name,
                "width": enc.Resolution.Width,
                "height": enc.Resolution.Height,
                "encoding": enc.Encoding,
                "fps": enc.RateControl.FrameRateLimit,
                "uri": uri,
                "snapshot": snap,
            }
        )
    sources = [s.token for s in m.GetVideoSources()]
    print(
        json.dumps(
            {
                "manufacturer": info.Manufacturer,
                "model": info.Model,
                "firmware": info.FirmwareVersion,
                "scopes": scopes,
                "profiles": profiles,
                "sources": sources,
                "services": services,
                "interfaces": interfaces,
                "year": clock,
            }
        )
    )


if __name__ == "__main__":
    os.environ.pop("http_proxy", None)
    if sys.argv[1] == "discover":
        discover(int(sys.argv[2]))
    else:
        media(*sys.argv[2:6])
