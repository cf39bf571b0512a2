"""A camera's sound through Home Assistant's ONVIF client (onvif-zeep-async), as
tests/audio_web.rs drives it: the profiles' audio source and encoder configurations, and the
audio operations of the media service.

  ha_audio.py HOST PORT USER PASSWORD    (empty USER: no credentials)

Prints one JSON object: {"profiles": [...], "sources": [...], ...} or {"refused": reason}.
"""
import asyncio
import json
import sys


def encoder(c):
    return None if c is None else {
        "token": c.token, "encoding": c.Encoding, "bitrate": c.Bitrate, "sample_rate": c.SampleRate,
        "use_count": c.UseCount}


async def main(host, port, user, password):
    from onvif import ONVIFCamera

    cam = ONVIFCamera(host, int(port), user, password)
    try:
        await cam.update_xaddrs()
        media = await cam.create_media_service()
        profiles = []
        for p in await media.GetProfiles():
            src = p.AudioSourceConfiguration
            profiles.append({
                "token": p.token,
                "video_encoding": p.VideoEncoderConfiguration.Encoding,
                "audio_source": None if src is None else {"token": src.token, "source": src.SourceToken},
                "audio_encoder": encoder(p.AudioEncoderConfiguration),
            })
        sources = [{"token": s.token, "channels": s.Channels} for s in await media.GetAudioSources()]
        source_configs = [c.token for c in await media.GetAudioSourceConfigurations()]
        encoders = [encoder(c) for c in await media.GetAudioEncoderConfigurations()]
        opts = await media.GetAudioEncoderConfigurationOptions({"ProfileToken": profiles[0]["token"]})
        options = [{"encoding": o.Encoding, "bitrates": list(o.BitrateList.Items),
                    "sample_rates": list(o.SampleRateList.Items)} for o in (opts.Options or [])]
        out = {"profiles": profiles, "sources": sources, "source_configs": source_configs,
               "encoders": encoders, "options": options}
    except Exception as e:  # ONVIFError, zeep's Fault, aiohttp's errors: all a refusal here
        out = {"refused": f"{type(e).__name__}: {e}"}
    finally:
        await cam.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
