package main
import (
	_ "github.com/emersion/go-smtp"
	_ "github.com/emersion/go-sasl"
	_ "github.com/emersion/go-msgauth/dkim"
	_ "github.com/miekg/dns"
	_ "modernc.org/sqlite"
	_ "github.com/BurntSushi/toml"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/net/idna"
)
func main() {}
