"""Home Assistant's ONVIF client (onvif-zeep-async) against camstream, as tests/onvif.rs
drives it: what HA's integration does when a camera is added.

  ha_client.py HOST PORT USER PASSWORD    (empty USER: no credentials)

Prints one JSON object: {"profiles": [...], "uri": "rtsp://..."} or {"refused": reason}.
"""
import asyncio
import json
import sys


async def main(host, port, user, password):
    from onvif import ONVIFCamera

    cam = ONVIFCamera(host, int(port), user, password)
    try:
        # As HA does: the services' addresses (GetCapabilities/GetServices), then media.
        await cam.update_xaddrs()
        media = await cam.create_media_service()
        profiles = await media.GetProfiles()
        req = media.create_type("GetStreamUri")
        req.ProfileToken = profiles[0].token
        req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        uri = await media.GetStreamUri(req)
        out = {"profiles": [p.token for p in profiles], "uri": uri.Uri}
    except Exception as e:  # ONVIFError, zeep's Fault, aiohttp's errors: all a refusal here
        out = {"refused": f"{type(e).__name__}: {e}"}
    finally:
        await cam.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
