<?php
// Sends one message through Sesame with PHPMailer (as WordPress and most PHP
// apps do): STARTTLS, SMTP AUTH, certificate checks off for the self-signed
// certificate. The SMTP dialogue goes to stderr so the caller can check the
// final "250 ... queued as" reply.
//
// Usage: php phpmailer_send.php HOST PORT USER PASSWORD FROM TO TOKEN
// PHPMAILER_AUTOLOAD overrides where PHPMailer is loaded from (default: the
// Debian libphp-phpmailer package).

use PHPMailer\PHPMailer\PHPMailer;
use PHPMailer\PHPMailer\SMTP;
use PHPMailer\PHPMailer\Exception;

$autoload = getenv('PHPMAILER_AUTOLOAD') ?: '/usr/share/php/libphp-phpmailer/autoload.php';
require $autoload;

if ($argc !== 8) {
    fwrite(STDERR, "usage: php phpmailer_send.php HOST PORT USER PASSWORD FROM TO TOKEN\n");
    exit(2);
}
[, $host, $port, $user, $password, $from, $to, $token] = $argv;

$mail = new PHPMailer(true);
try {
    $mail->isSMTP();
    $mail->Host = $host;
    $mail->Port = (int)$port;
    $mail->Hostname = 'phpmailer.client.test';
    $mail->SMTPSecure = PHPMailer::ENCRYPTION_STARTTLS;
    $mail->SMTPAuth = true;
    $mail->Username = $user;
    $mail->Password = $password;
    $mail->Timeout = 30;
    $mail->SMTPOptions = [
        'ssl' => [
            'verify_peer' => false,
            'verify_peer_name' => false,
            'allow_self_signed' => true,
        ],
    ];
    $mail->SMTPDebug = SMTP::DEBUG_SERVER;
    $mail->Debugoutput = function ($str, $level) {
        fwrite(STDERR, rtrim($str) . "\n");
    };
    $mail->setFrom($from);
    $mail->addAddress($to);
    $mail->Subject = $token;
    $mail->Body = "Sent by PHPMailer.\r\nToken: $token\r\n";
    $mail->send();
} catch (Exception $e) {
    fwrite(STDERR, "PHPMailer error: " . $mail->ErrorInfo . "\n");
    exit(1);
}
exit(0);
