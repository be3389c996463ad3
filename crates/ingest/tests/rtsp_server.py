"""A real RTSP server for vigil's tests: GStreamer's gst-rtsp-server.

Run with Debian's interpreter (its python3-gi / python3-gst-1.0 packages):

    /usr/bin/python3 rtsp_server.py PORT [USER PASSWORD]

Serves live test patterns on 127.0.0.1:PORT at /h264, /h265 and /mjpeg
(25 fps, a key frame every second). With USER and PASSWORD every path needs
Basic authentication. With VIGIL_RTSP_FILE=clip.mp4 (H.264) it also serves
that file, without re-encoding, at /file (each client from its start: for
benchmarks). Prints "ready" once listening; runs until killed.
"""

import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

RAW = "videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=25/1"
PIPELINES = {
    "/h264": f"( {RAW} ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )",
    "/h265": f"( {RAW} ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
    "! rtph265pay name=pay0 pt=96 config-interval=-1 )",
    "/mjpeg": f"( {RAW} ! jpegenc quality=60 ! rtpjpegpay name=pay0 pt=26 )",
}


if os.environ.get("VIGIL_RTSP_FILE"):
    PIPELINES["/file"] = (
        f"( filesrc location={os.environ['VIGIL_RTSP_FILE']} ! qtdemux ! h264parse "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def main():
    Gst.init(None)
    port = sys.argv[1]
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    if len(sys.argv) >= 4:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(sys.argv[2], sys.argv[3]), token)
        server.set_auth(auth)
    mounts = server.get_mount_points()
    for path, launch in PIPELINES.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        if len(sys.argv) >= 4:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_permission_for_role("user", "media.factory.access", True)
            permissions.add_permission_for_role("user", "media.factory.construct", True)
            factory.set_permissions(permissions)
        mounts.add_factory(path, factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
