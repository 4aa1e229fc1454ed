// Renders consul-template templates with Go's text/template, the way Vault
// Agent does, for tests/convert.rs to compare the converted handlebars
// templates against byte for byte.
//
// Input (stdin): a JSON array of cases, each
//
//	{"template": "...", "strict": false,
//	 "secrets": [{"path": "...", "args": ["k=v"], "response": {...}}],
//	 "json": <value or absent>}
//
// Output (stdout): a JSON array of {"output": "...", "error": "..."}.
//
// `secret` is emulated from the given responses, as consul-template's
// dependency.Secret (Data decoded with UseNumber, as Vault's API client
// does), with its arguments read as consul-template reads them (spaces
// trimmed, empty ones skipped, the last of a repeated key). `pkiCert` is
// emulated from the same responses as consul-template derives its result
// (Cert, Key, CA, CAChain, and the Data method) from a PKI issue response:
// every string of the data (and of ca_chain) followed by a newline, in Go's
// map order, scanned for PEM blocks that encoding/pem decodes and encodes
// again and crypto/x509 classifies. It does not read the template's
// destination file (the agent's cache), which these cases do not have.
// base64Decode, base64Encode, toJSON and toJSONPretty are consul-template's
// own definitions. With "json", the case instead prints toJSON and
// toJSONPretty of that value, separated by a NUL byte.
// Only the standard library is used.
package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/template"
)

type secretCase struct {
	Path     string          `json:"path"`
	Args     []string        `json:"args"`
	Response json.RawMessage `json:"response"`
}

type testCase struct {
	Template string          `json:"template"`
	Strict   bool            `json:"strict"`
	Secrets  []secretCase    `json:"secrets"`
	JSON     json.RawMessage `json:"json"`
}

type result struct {
	Output string `json:"output"`
	Error  string `json:"error,omitempty"`
}

// Secret mirrors consul-template's dependency.Secret fields templates use.
type Secret struct {
	RequestID     string
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Data          map[string]interface{}
	Warnings      []string
}

// PemEncoded mirrors the fields of consul-template's pkiCert result.
type PemEncoded struct {
	Cert, Key, CA string
	CAChain       []string
}

// Data returns the value itself, as consul-template's does.
func (p PemEncoded) Data() PemEncoded {
	return p
}

// requestKey reads a secret or pkiCert call's arguments as consul-template
// does and names the request.
func requestKey(s []string) (string, error) {
	if len(s) == 0 {
		return "", errors.New("no path")
	}
	path := strings.Trim(strings.TrimSpace(s[0]), "/")
	data := map[string]string{}
	for _, str := range s[1:] {
		if len(str) == 0 {
			continue
		}
		parts := strings.SplitN(str, "=", 2)
		if len(parts) != 2 {
			return "", fmt.Errorf("not k=v pair %q", str)
		}
		data[strings.TrimSpace(parts[0])] = strings.TrimSpace(parts[1])
	}
	pairs := []string{}
	for k, v := range data {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(append([]string{path}, pairs...), "|"), nil
}

// pkiFields derives pkiCert's result from an issue response's data.
func pkiFields(data map[string]interface{}) (PemEncoded, error) {
	var text bytes.Buffer
	for k, v := range data {
		switch v := v.(type) {
		case string:
			text.WriteString(v + "\n")
		case []interface{}:
			if k != "ca_chain" {
				continue
			}
			for _, item := range v {
				if s, ok := item.(string); ok {
					text.WriteString(s + "\n")
				}
			}
		}
	}
	var result PemEncoded
	found := false
	rest := text.Bytes()
	for {
		begin := bytes.Index(rest, []byte("-----BEGIN"))
		if begin < 0 {
			break
		}
		rest = rest[begin:]
		end := bytes.Index(rest, []byte("-----END")) + len("-----END")
		end += bytes.Index(rest[end:], []byte("-----")) + len("-----")
		chunk := append(append([]byte("\n"), rest[:end]...), '\n')
		rest = rest[end:]
		block, _ := pem.Decode(chunk)
		if block == nil {
			break
		}
		encoded := string(pem.EncodeToMemory(block))
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			result.Key = encoded
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return PemEncoded{}, err
		}
		if !cert.IsCA {
			result.Cert = encoded
			found = true
			continue
		}
		if result.CA == "" {
			result.CA = encoded
		}
		known := false
		for _, c := range result.CAChain {
			known = known || c == encoded
		}
		if !known {
			result.CAChain = append(result.CAChain, encoded)
		}
	}
	if !found {
		return PemEncoded{}, errors.New("no certificate")
	}
	return result, nil
}

func decode(raw []byte, into interface{}) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(into)
}

func toJSON(i interface{}) (string, error) {
	result, err := json.Marshal(i)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(result)), err
}

func toJSONPretty(i interface{}) (string, error) {
	result, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(result)), err
}

func run(c testCase) result {
	if len(c.JSON) > 0 {
		var v interface{}
		if err := decode(c.JSON, &v); err != nil {
			return result{Error: err.Error()}
		}
		a, err := toJSON(v)
		if err != nil {
			return result{Error: err.Error()}
		}
		b, err := toJSONPretty(v)
		if err != nil {
			return result{Error: err.Error()}
		}
		return result{Output: a + "\x00" + b}
	}
	secrets := map[string]*Secret{}
	for _, s := range c.Secrets {
		var r struct {
			LeaseID       string                 `json:"lease_id"`
			LeaseDuration int                    `json:"lease_duration"`
			Renewable     bool                   `json:"renewable"`
			Data          map[string]interface{} `json:"data"`
			Warnings      []string               `json:"warnings"`
		}
		if err := decode(s.Response, &r); err != nil {
			return result{Error: err.Error()}
		}
		key, err := requestKey(append([]string{s.Path}, s.Args...))
		if err != nil {
			return result{Error: err.Error()}
		}
		secrets[key] = &Secret{LeaseID: r.LeaseID, LeaseDuration: r.LeaseDuration, Renewable: r.Renewable, Data: r.Data, Warnings: r.Warnings}
	}
	funcs := template.FuncMap{
		"secret": func(s ...string) (*Secret, error) {
			key, err := requestKey(s)
			if err != nil {
				return nil, err
			}
			if v, ok := secrets[key]; ok {
				return v, nil
			}
			return nil, fmt.Errorf("no secret %q", s)
		},
		"pkiCert": func(s ...string) (interface{}, error) {
			key, err := requestKey(s)
			if err != nil {
				return nil, err
			}
			if v, ok := secrets[key]; ok {
				return pkiFields(v.Data)
			}
			return nil, fmt.Errorf("no secret %q", s)
		},
		"base64Decode": func(s string) (string, error) {
			v, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return "", err
			}
			return string(v), nil
		},
		"base64Encode": func(s string) (string, error) {
			return base64.StdEncoding.EncodeToString([]byte(s)), nil
		},
		"toJSON":       toJSON,
		"toJSONPretty": toJSONPretty,
	}
	t := template.New("t").Funcs(funcs)
	if c.Strict {
		t = t.Option("missingkey=error")
	} else {
		t = t.Option("missingkey=zero")
	}
	t, err := t.Parse(c.Template)
	if err != nil {
		return result{Error: err.Error()}
	}
	var out bytes.Buffer
	if err := t.Execute(&out, nil); err != nil {
		return result{Output: out.String(), Error: err.Error()}
	}
	return result{Output: out.String()}
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	results := make([]result, 0, len(cases))
	for _, c := range cases {
		results = append(results, run(c))
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
