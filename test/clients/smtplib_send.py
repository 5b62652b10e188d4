#!/usr/bin/python3
"""Send one message through Sesame with Python's smtplib, as an app would.

Usage: smtplib_send.py starttls|tls HOST PORT USER PASSWORD FROM TO TOKEN

The server's certificate is self-signed, so verification is off. The SMTP
dialogue goes to stderr (debug level 1) so the caller can check the final
"250 ... queued as" reply.
"""

import smtplib
import ssl
import sys
from email.message import EmailMessage
from email.utils import formatdate, make_msgid


def main():
    if len(sys.argv) != 9:
        print(__doc__, file=sys.stderr)
        return 2
    mode, host, port, user, password, sender, rcpt, token = sys.argv[1:]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = token
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[-1])
    msg.set_content("Sent by Python smtplib (%s).\nToken: %s\n" % (mode, token))

    if mode == "starttls":
        smtp = smtplib.SMTP(host, int(port), timeout=30)
        smtp.set_debuglevel(1)
        smtp.ehlo("smtplib.client.test")
        smtp.starttls(context=ctx)
        smtp.ehlo("smtplib.client.test")
    elif mode == "tls":
        smtp = smtplib.SMTP_SSL(host, int(port), timeout=30, context=ctx)
        smtp.set_debuglevel(1)
        smtp.ehlo("smtplib.client.test")
    else:
        print("unknown mode %r" % mode, file=sys.stderr)
        return 2
    smtp.login(user, password)
    smtp.send_message(msg)
    smtp.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
