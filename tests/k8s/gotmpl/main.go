// Renders a Go text/template with JSON data read from stdin, as Frigate's nginx service
// does with tempio (home-assistant/tempio: text/template, data from stdin). The tests
// render deploy/frigate/base/listen.gotmpl with it: the real template engine, not a
// model of it.
//
//	echo '{"enabled": true}' | gotmpl listen.gotmpl > listen.conf
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gotmpl TEMPLATE < data.json")
		os.Exit(2)
	}
	var data interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&data); err != nil {
		fmt.Fprintln(os.Stderr, "data:", err)
		os.Exit(1)
	}
	t, err := template.ParseFiles(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "template:", err)
		os.Exit(1)
	}
	if err := t.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
