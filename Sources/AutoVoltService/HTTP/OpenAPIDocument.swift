/// The OpenAPI 3.1 document of the HTTP API (issue 22 §4), served at /api/power-analytics/openapi.json.
///
/// Every route `HTTPServer` registers, with the statuses its handler answers and the JSON it
/// writes (Stores/QueryResults.swift, StatementJSON.swift, AlarmStore.swift, ...). A route or an
/// answer that changes changes here too: OpenAPITests compares the document with the router and
/// with a running worker's answers.
enum OpenAPIDocument {
    /// The document as JSON text (valid JSON; OpenAPI 3.1.0).
    static let json: String = #"""
    {
      "openapi": "3.1.0",
      "info": {
        "title": "AutoVolt ingestion worker HTTP API",
        "version": "1.0.0",
        "description": "The worker's HTTP interface (contract sections 7 and 8; issue 22 §4). Reads are open; writes need `Authorization: Bearer <AUTOVOLT_API_TOKEN_FILE>` (403 while none is configured), telemetry ingest also takes an HMAC-SHA256 signature. Every route is behind the request bounds: a target over 4096 bytes is 414, more than 16 query parameters or a value over 256 bytes is 400, a Content-Length over 65536 bytes (1 MiB for telemetry) is 413, each with a JSON `{\"error\": ...}` body. Times are ISO 8601; local dates and months follow AUTOVOLT_TIMEZONE."
      },
      "tags": [
        {
          "name": "health",
          "description": "Health and metrics."
        },
        {
          "name": "analytics",
          "description": "Read queries (the CLI's --json answers)."
        },
        {
          "name": "accounting",
          "description": "Tariffs and recalculation."
        },
        {
          "name": "alarms",
          "description": "Alarms and their event stream."
        },
        {
          "name": "statements",
          "description": "Monthly statements."
        },
        {
          "name": "ingest",
          "description": "HTTP telemetry ingest."
        },
        {
          "name": "dashboard",
          "description": "HTML pages."
        },
        {
          "name": "meta",
          "description": "This document."
        }
      ],
      "paths": {
        "/health": {
          "get": {
            "operationId": "getHealth",
            "summary": "Worker health (contract section 7).",
            "tags": [
              "health"
            ],
            "responses": {
              "200": {
                "description": "Healthy or degraded.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Health"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Unhealthy (a fatal error, or the journal is full): the same document.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Health"
                    }
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/health": {
          "get": {
            "operationId": "getPowerAnalyticsHealth",
            "summary": "Worker health at the AutoVolt guide's path (the same document as /health).",
            "tags": [
              "health"
            ],
            "responses": {
              "200": {
                "description": "Healthy or degraded.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Health"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Unhealthy (a fatal error, or the journal is full): the same document.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Health"
                    }
                  }
                }
              }
            }
          }
        },
        "/metrics": {
          "get": {
            "operationId": "getMetrics",
            "summary": "Prometheus metrics (text exposition format 0.0.4).",
            "tags": [
              "health"
            ],
            "responses": {
              "200": {
                "description": "Prometheus text format; Content-Type `text/plain; version=0.0.4`.",
                "content": {
                  "text/plain": {
                    "schema": {
                      "type": "string"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              }
            }
          }
        },
        "/api/power-analytics/openapi.json": {
          "get": {
            "operationId": "getOpenAPIDocument",
            "summary": "This OpenAPI 3.1 document.",
            "tags": [
              "meta"
            ],
            "responses": {
              "200": {
                "description": "The document.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/OpenAPIDocumentBody"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              }
            }
          }
        },
        "/api/power-analytics/summary": {
          "get": {
            "operationId": "getSummary",
            "summary": "Energy and cost of a local day or month, for a classroom or the campus.",
            "tags": [
              "analytics"
            ],
            "parameters": [
              {
                "name": "date",
                "in": "query",
                "required": true,
                "description": "`YYYY-MM-DD` (a local day) or `YYYY-MM` (a local month).",
                "schema": {
                  "type": "string",
                  "pattern": "^\\d{4}-\\d{2}(-\\d{2})?$",
                  "examples": [
                    "2026-11-01",
                    "2026-11"
                  ]
                }
              },
              {
                "name": "classroom",
                "in": "query",
                "required": false,
                "description": "A classroom; empty or absent: the campus.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The summary.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/SummaryResult"
                    }
                  }
                }
              },
              "400": {
                "description": "A bad or missing parameter (or the request bounds: more than 16 query parameters, a value longer than 256 bytes).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "500": {
                "description": "An unexpected query failure (on PostgreSQL, a database error other than a deadline is answered 500).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "503": {
                "$ref": "#/components/responses/ReadUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/timeline": {
          "get": {
            "operationId": "getTimeline",
            "summary": "Energy per hour or day over a range.",
            "tags": [
              "analytics"
            ],
            "description": "The range is [start, end); at most 93 days, 31 with hourly buckets. Default buckets: hours up to two days, days beyond.",
            "parameters": [
              {
                "name": "start",
                "in": "query",
                "required": true,
                "description": "An ISO 8601 instant with a UTC offset (`2026-11-01T10:00:00+05:30`, seconds optional) or a local date `YYYY-MM-DD` (its local midnight).",
                "schema": {
                  "type": "string",
                  "examples": [
                    "2026-11-01"
                  ]
                }
              },
              {
                "name": "end",
                "in": "query",
                "required": true,
                "description": "An ISO 8601 instant with a UTC offset (`2026-11-01T10:00:00+05:30`, seconds optional) or a local date `YYYY-MM-DD` (the end of that day); after start.",
                "schema": {
                  "type": "string",
                  "examples": [
                    "2026-11-02"
                  ]
                }
              },
              {
                "name": "bucket",
                "in": "query",
                "required": false,
                "description": "`hour` or `day` (case-insensitive).",
                "schema": {
                  "type": "string",
                  "enum": [
                    "hour",
                    "day"
                  ]
                }
              },
              {
                "name": "classroom",
                "in": "query",
                "required": false,
                "description": "A classroom; empty or absent: the campus.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The timeline.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/TimelineResult"
                    }
                  }
                }
              },
              "400": {
                "description": "A bad or missing parameter (or the request bounds: more than 16 query parameters, a value longer than 256 bytes).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "500": {
                "description": "An unexpected query failure (on PostgreSQL, a database error other than a deadline is answered 500).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "503": {
                "$ref": "#/components/responses/ReadUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/device-breakdown": {
          "get": {
            "operationId": "getDeviceBreakdown",
            "summary": "Per-device (and per-switch) energy of a local day.",
            "tags": [
              "analytics"
            ],
            "parameters": [
              {
                "name": "date",
                "in": "query",
                "required": true,
                "description": "A local date `YYYY-MM-DD`.",
                "schema": {
                  "type": "string",
                  "format": "date",
                  "pattern": "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$"
                }
              },
              {
                "name": "classroom",
                "in": "query",
                "required": false,
                "description": "A classroom; empty or absent: the campus.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The breakdown.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/DeviceBreakdownResult"
                    }
                  }
                }
              },
              "400": {
                "description": "A bad or missing parameter (or the request bounds: more than 16 query parameters, a value longer than 256 bytes).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "500": {
                "description": "An unexpected query failure (on PostgreSQL, a database error other than a deadline is answered 500).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "503": {
                "$ref": "#/components/responses/ReadUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/monthly": {
          "get": {
            "operationId": "getMonthly",
            "summary": "A month against the previous one, in total and per classroom.",
            "tags": [
              "analytics"
            ],
            "parameters": [
              {
                "name": "month",
                "in": "query",
                "required": true,
                "description": "`YYYY-MM`.",
                "schema": {
                  "type": "string",
                  "pattern": "^\\d{4}-(0[1-9]|1[0-2])$",
                  "examples": [
                    "2026-11"
                  ]
                }
              },
              {
                "name": "classroom",
                "in": "query",
                "required": false,
                "description": "A classroom; empty or absent: the campus.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The comparison.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/MonthlyResult"
                    }
                  }
                }
              },
              "400": {
                "description": "A bad or missing parameter (or the request bounds: more than 16 query parameters, a value longer than 256 bytes).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "500": {
                "description": "An unexpected query failure (on PostgreSQL, a database error other than a deadline is answered 500).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "503": {
                "$ref": "#/components/responses/ReadUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/cost-versions": {
          "get": {
            "operationId": "listCostVersions",
            "summary": "Every tariff (cost) version.",
            "tags": [
              "accounting"
            ],
            "responses": {
              "200": {
                "description": "The tariff versions.",
                "content": {
                  "application/json": {
                    "schema": {
                      "type": "array",
                      "items": {
                        "$ref": "#/components/schemas/TariffDocument"
                      }
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many queries in progress or past the deadline (with Retry-After), or the database failed.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          },
          "post": {
            "operationId": "createCostVersion",
            "summary": "Add a tariff version; recalculates the aggregates it reaches.",
            "tags": [
              "accounting"
            ],
            "requestBody": {
              "required": true,
              "content": {
                "application/json": {
                  "schema": {
                    "$ref": "#/components/schemas/NewTariff"
                  }
                }
              }
            },
            "security": [
              {
                "bearerToken": []
              }
            ],
            "responses": {
              "201": {
                "description": "The version added and the recalculation it caused.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/TariffChange"
                    }
                  }
                }
              },
              "400": {
                "description": "Not JSON of the documented shape, cost_per_kwh below 0, a bad currency or effective_from, or a classroom the registry does not know (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "401": {
                "$ref": "#/components/responses/Unauthorized"
              },
              "403": {
                "$ref": "#/components/responses/Forbidden"
              },
              "413": {
                "$ref": "#/components/responses/ContentTooLarge"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "$ref": "#/components/responses/WriteUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/recalculate": {
          "post": {
            "operationId": "recalculate",
            "summary": "Rebuild the aggregates of a range of local dates from the ledger.",
            "tags": [
              "accounting"
            ],
            "requestBody": {
              "required": true,
              "content": {
                "application/json": {
                  "schema": {
                    "$ref": "#/components/schemas/RecalculateRequest"
                  }
                }
              }
            },
            "security": [
              {
                "bearerToken": []
              }
            ],
            "responses": {
              "200": {
                "description": "What was recalculated.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/RecalculationReport"
                    }
                  }
                }
              },
              "400": {
                "description": "Not JSON with start and end `YYYY-MM-DD`, end before start, or more than 366 days (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "401": {
                "$ref": "#/components/responses/Unauthorized"
              },
              "403": {
                "$ref": "#/components/responses/Forbidden"
              },
              "413": {
                "$ref": "#/components/responses/ContentTooLarge"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "$ref": "#/components/responses/WriteUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/alarms": {
          "get": {
            "operationId": "listAlarms",
            "summary": "Alarms, newest first.",
            "tags": [
              "alarms"
            ],
            "parameters": [
              {
                "name": "status",
                "in": "query",
                "required": false,
                "description": "`active` (not cleared) or `all`.",
                "schema": {
                  "type": "string",
                  "enum": [
                    "active",
                    "all"
                  ],
                  "default": "active"
                }
              },
              {
                "name": "from",
                "in": "query",
                "required": false,
                "description": "Raised at or after: an ISO 8601 instant with a UTC offset (`2026-11-01T10:00:00+05:30`, seconds optional) or a local date `YYYY-MM-DD` (its local midnight).",
                "schema": {
                  "type": "string"
                }
              },
              {
                "name": "to",
                "in": "query",
                "required": false,
                "description": "Raised before: an ISO 8601 instant with a UTC offset (`2026-11-01T10:00:00+05:30`, seconds optional) or a local date `YYYY-MM-DD` (the end of that day).",
                "schema": {
                  "type": "string"
                }
              },
              {
                "name": "limit",
                "in": "query",
                "required": false,
                "description": "At most this many alarms.",
                "schema": {
                  "type": "integer",
                  "minimum": 1,
                  "maximum": 5000,
                  "default": 500
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The alarms.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/AlarmList"
                    }
                  }
                }
              },
              "400": {
                "description": "A bad status, from, to or limit (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many queries in progress or past the deadline (with Retry-After), or the database failed.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/alarms/{id}/ack": {
          "post": {
            "operationId": "acknowledgeAlarm",
            "summary": "Acknowledge an alarm.",
            "tags": [
              "alarms"
            ],
            "parameters": [
              {
                "name": "id",
                "in": "path",
                "required": true,
                "description": "The alarm id.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "requestBody": {
              "required": false,
              "content": {
                "application/json": {
                  "schema": {
                    "$ref": "#/components/schemas/AckRequest"
                  }
                }
              },
              "description": "Optional; empty body: acknowledged by `api`."
            },
            "security": [
              {
                "bearerToken": []
              }
            ],
            "responses": {
              "200": {
                "description": "Acknowledged now (`acknowledged: true`) or already (`false`).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/AckAnswer"
                    }
                  }
                }
              },
              "400": {
                "description": "The body is neither empty nor JSON `{\"by\": ...}` (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "401": {
                "$ref": "#/components/responses/Unauthorized"
              },
              "403": {
                "$ref": "#/components/responses/Forbidden"
              },
              "404": {
                "description": "No such alarm.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "413": {
                "$ref": "#/components/responses/ContentTooLarge"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "$ref": "#/components/responses/WriteUnavailable"
              }
            }
          }
        },
        "/api/power-analytics/alarms/stream": {
          "get": {
            "operationId": "streamAlarms",
            "summary": "Alarm raises, clears and acks as Server-Sent Events.",
            "tags": [
              "alarms"
            ],
            "description": "Without Last-Event-ID (or last_event_id) the stream starts after the newest stored event.",
            "parameters": [
              {
                "name": "Last-Event-ID",
                "in": "header",
                "required": false,
                "description": "Resume after this event number.",
                "schema": {
                  "type": "integer"
                }
              },
              {
                "name": "last_event_id",
                "in": "query",
                "required": false,
                "description": "Resume after this event number (when the header is absent).",
                "schema": {
                  "type": "integer"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "An endless event stream (`Cache-Control: no-cache`): first `retry: 3000`, then per event `id: N`, `event: raise|clear|ack`, `data: <AlarmEvent JSON>`; a `: keep-alive` comment every 15 s of quiet.",
                "content": {
                  "text/event-stream": {
                    "schema": {
                      "type": "string"
                    },
                    "x-event-data": {
                      "$ref": "#/components/schemas/AlarmEvent"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many streams open (64; Retry-After 10), or the last event id could not be read (too many queries, deadline, or a database failure).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/statements": {
          "get": {
            "operationId": "listStatements",
            "summary": "Monthly statements (at most 1,000).",
            "tags": [
              "statements"
            ],
            "parameters": [
              {
                "name": "month",
                "in": "query",
                "required": false,
                "description": "Only this month, `YYYY-MM`.",
                "schema": {
                  "type": "string",
                  "pattern": "^(19[7-9]\\d|[2-9]\\d{3})-(0[1-9]|1[0-2])$"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The statements.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/StatementList"
                    }
                  }
                }
              },
              "400": {
                "description": "month is not `YYYY-MM` (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many queries in progress or past the deadline (with Retry-After), or the database failed.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/statements/{id}": {
          "get": {
            "operationId": "getStatement",
            "summary": "One statement, whole.",
            "tags": [
              "statements"
            ],
            "parameters": [
              {
                "name": "id",
                "in": "path",
                "required": true,
                "description": "The statement id, e.g. `2026-11.campus.v1`.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The statement.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Statement"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "404": {
                "description": "No such statement.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "409": {
                "description": "The statement's device-days are incomplete in storage (generate the draft again).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many queries in progress or past the deadline (with Retry-After), or the database failed.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/statements/{id}/{file}": {
          "get": {
            "operationId": "exportStatement",
            "summary": "A statement's export (CSV, PDF or XLSX).",
            "tags": [
              "statements"
            ],
            "parameters": [
              {
                "name": "id",
                "in": "path",
                "required": true,
                "description": "The statement id.",
                "schema": {
                  "type": "string"
                }
              },
              {
                "name": "file",
                "in": "path",
                "required": true,
                "description": "`export.csv`, `export.pdf` or `export.xlsx` (anything else: 404).",
                "schema": {
                  "type": "string",
                  "enum": [
                    "export.csv",
                    "export.pdf",
                    "export.xlsx"
                  ]
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The export as an attachment: a draft's made now, a frozen statement's the bytes recorded at freezing. Content-Type `text/csv; charset=utf-8`, `application/pdf` or `application/vnd.openxmlformats-officedocument.spreadsheetml.sheet`.",
                "headers": {
                  "Content-Disposition": {
                    "description": "`attachment; filename=\"<id>.<format>\"`.",
                    "schema": {
                      "type": "string"
                    }
                  },
                  "X-Content-SHA256": {
                    "description": "The SHA-256 (hex) of the bytes sent; for a frozen statement, the one recorded when it was frozen.",
                    "schema": {
                      "type": "string",
                      "pattern": "^[0-9a-f]{64}$"
                    }
                  }
                },
                "content": {
                  "text/csv": {
                    "schema": {
                      "type": "string"
                    }
                  },
                  "application/pdf": {
                    "schema": {
                      "type": "string",
                      "contentMediaType": "application/pdf"
                    }
                  },
                  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                    "schema": {
                      "type": "string",
                      "contentMediaType": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                    }
                  }
                }
              },
              "400": {
                "$ref": "#/components/responses/QueryBounds"
              },
              "404": {
                "description": "No such statement, or a file other than export.csv, export.pdf, export.xlsx.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "409": {
                "description": "The statement's device-days are incomplete in storage.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "500": {
                "description": "A frozen statement's export no longer has its recorded SHA-256, or rendering failed.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "503": {
                "description": "Too many queries in progress or past the deadline (with Retry-After), or the database failed.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/statements/generate": {
          "post": {
            "operationId": "generateStatement",
            "summary": "Make (or replace) the draft of a month for the campus, a classroom or a group.",
            "tags": [
              "statements"
            ],
            "requestBody": {
              "required": true,
              "content": {
                "application/json": {
                  "schema": {
                    "$ref": "#/components/schemas/GenerateRequest"
                  }
                }
              }
            },
            "security": [
              {
                "bearerToken": []
              }
            ],
            "responses": {
              "201": {
                "description": "The draft made.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/StatementSummary"
                    }
                  }
                }
              },
              "400": {
                "description": "Not JSON with month `YYYY-MM`, a month that has not begun, or both classroom and group (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "401": {
                "$ref": "#/components/responses/Unauthorized"
              },
              "403": {
                "$ref": "#/components/responses/Forbidden"
              },
              "404": {
                "description": "An unknown classroom or group, or no daily aggregates for the month in that scope.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "409": {
                "description": "The statement kept changing under concurrent generates or freezes; try again.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "413": {
                "$ref": "#/components/responses/ContentTooLarge"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "The database failed (`database unavailable: ...` or `database: ...`).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/statements/{id}/freeze": {
          "post": {
            "operationId": "freezeStatement",
            "summary": "Freeze a draft: its exports are made and their SHA-256 recorded.",
            "tags": [
              "statements"
            ],
            "parameters": [
              {
                "name": "id",
                "in": "path",
                "required": true,
                "description": "The statement id.",
                "schema": {
                  "type": "string"
                }
              }
            ],
            "requestBody": {
              "required": false,
              "content": {
                "application/json": {
                  "schema": {
                    "$ref": "#/components/schemas/FreezeRequest"
                  }
                }
              },
              "description": "Optional; empty body: frozen by `api`."
            },
            "security": [
              {
                "bearerToken": []
              }
            ],
            "responses": {
              "200": {
                "description": "The frozen statement.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/StatementSummary"
                    }
                  }
                }
              },
              "400": {
                "description": "The body is neither empty nor JSON `{\"by\": ...}` (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "401": {
                "$ref": "#/components/responses/Unauthorized"
              },
              "403": {
                "$ref": "#/components/responses/Forbidden"
              },
              "404": {
                "description": "No such statement.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "409": {
                "description": "Frozen already, or generated again while being frozen.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "413": {
                "$ref": "#/components/responses/ContentTooLarge"
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "500": {
                "description": "An export could not be rendered.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "503": {
                "description": "The database failed (`database unavailable: ...` or `database: ...`).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              }
            }
          }
        },
        "/api/power-analytics/telemetry": {
          "post": {
            "operationId": "ingestTelemetry",
            "summary": "HTTP ingest: one telemetry payload or an array of up to 500.",
            "tags": [
              "ingest"
            ],
            "description": "Each message goes into the journal as `autovolt/<esp32_name>/telemetry` and is decoded, deduplicated and stored exactly as one from MQTT. Credentials: a bearer token, or `X-AutoVolt-Timestamp` and `X-AutoVolt-Signature` (when a signature header is present it is the one checked). The body is parsed (400, 413) before the credentials are checked.",
            "parameters": [
              {
                "name": "X-AutoVolt-Timestamp",
                "in": "header",
                "required": false,
                "description": "Epoch seconds, within 5 minutes of the worker's clock; required with X-AutoVolt-Signature.",
                "schema": {
                  "type": "string",
                  "pattern": "^[0-9]{1,12}$"
                }
              },
              {
                "name": "X-AutoVolt-Signature",
                "in": "header",
                "required": false,
                "description": "`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>` (compared case-insensitively), keyed with the board's `hmac_secret` (requests holding only that board's messages) or AUTOVOLT_INGEST_SECRET_FILE.",
                "schema": {
                  "type": "string",
                  "pattern": "^sha256=[0-9a-fA-F]{64}$"
                }
              }
            ],
            "requestBody": {
              "required": true,
              "content": {
                "application/json": {
                  "schema": {
                    "oneOf": [
                      {
                        "$ref": "#/components/schemas/TelemetryPayload"
                      },
                      {
                        "type": "array",
                        "items": {
                          "$ref": "#/components/schemas/TelemetryPayload"
                        },
                        "minItems": 1,
                        "maxItems": 500
                      }
                    ]
                  }
                }
              },
              "description": "One payload or a non-empty array of at most 500; at most 1 MiB."
            },
            "security": [
              {
                "bearerToken": []
              },
              {
                "ingestSignature": [],
                "ingestTimestamp": []
              }
            ],
            "responses": {
              "202": {
                "description": "Every message accepted; the journal commit is on disk (`rejected` is empty).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/IngestAnswer"
                    }
                  }
                }
              },
              "400": {
                "description": "Some messages were refused (the others are accepted and stored; the refused ones are kept in rejected_messages), or the body is not JSON or an empty array (or the request bounds).",
                "content": {
                  "application/json": {
                    "schema": {
                      "oneOf": [
                        {
                          "$ref": "#/components/schemas/IngestAnswer"
                        },
                        {
                          "$ref": "#/components/schemas/Error"
                        }
                      ]
                    }
                  }
                }
              },
              "401": {
                "description": "No credentials, a wrong bearer token, or a bad, stale (over 5 minutes) or missing-timestamp signature.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "403": {
                "description": "The credential's kind is not configured: no AUTOVOLT_API_TOKEN_FILE (bearer) or no ingest secret (signature).",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "409": {
                "description": "This signed request was already received inside its 5-minute window.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "413": {
                "description": "The body is larger than 1 MiB (1048576 bytes), or holds more than 500 messages.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "The journal is full or cannot be written: nothing was written.",
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                },
                "headers": {
                  "Retry-After": {
                    "$ref": "#/components/headers/RetryAfter"
                  }
                }
              }
            }
          }
        },
        "/": {
          "get": {
            "operationId": "getDashboard",
            "summary": "The dashboard page (no external scripts, styles or fonts).",
            "tags": [
              "dashboard"
            ],
            "parameters": [
              {
                "name": "date",
                "in": "query",
                "required": false,
                "description": "A local date `YYYY-MM-DD`; absent or empty: today.",
                "schema": {
                  "type": "string",
                  "format": "date",
                  "pattern": "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The page. Content-Type `text/html; charset=utf-8`.",
                "headers": {
                  "Content-Security-Policy": {
                    "$ref": "#/components/headers/ContentSecurityPolicy"
                  },
                  "Cache-Control": {
                    "$ref": "#/components/headers/CacheControlNoStore"
                  },
                  "Server-Timing": {
                    "description": "`db;dur=MS, render;dur=MS`.",
                    "schema": {
                      "type": "string"
                    }
                  }
                },
                "content": {
                  "text/html": {
                    "schema": {
                      "type": "string"
                    }
                  }
                }
              },
              "400": {
                "description": "date is not `YYYY-MM-DD` (HTML); or the request bounds (JSON). Content-Type `text/html; charset=utf-8`.",
                "headers": {
                  "Content-Security-Policy": {
                    "$ref": "#/components/headers/ContentSecurityPolicy"
                  },
                  "Cache-Control": {
                    "$ref": "#/components/headers/CacheControlNoStore"
                  }
                },
                "content": {
                  "text/html": {
                    "schema": {
                      "type": "string"
                    }
                  },
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many queries in progress, past the deadline, or the database failed: an error page. Content-Type `text/html; charset=utf-8`.",
                "headers": {
                  "Content-Security-Policy": {
                    "$ref": "#/components/headers/ContentSecurityPolicy"
                  },
                  "Cache-Control": {
                    "$ref": "#/components/headers/CacheControlNoStore"
                  }
                },
                "content": {
                  "text/html": {
                    "schema": {
                      "type": "string"
                    }
                  }
                }
              }
            }
          }
        },
        "/devices/{name}": {
          "get": {
            "operationId": "getDevicePage",
            "summary": "One device's page for a day.",
            "tags": [
              "dashboard"
            ],
            "parameters": [
              {
                "name": "name",
                "in": "path",
                "required": true,
                "description": "The device's esp32_name, `[A-Za-z0-9_.-]{1,64}`.",
                "schema": {
                  "type": "string",
                  "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                  "examples": [
                    "lab-101"
                  ]
                }
              },
              {
                "name": "date",
                "in": "query",
                "required": false,
                "description": "A local date `YYYY-MM-DD`; absent or empty: today.",
                "schema": {
                  "type": "string",
                  "format": "date",
                  "pattern": "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$"
                }
              }
            ],
            "responses": {
              "200": {
                "description": "The page. Content-Type `text/html; charset=utf-8`.",
                "headers": {
                  "Content-Security-Policy": {
                    "$ref": "#/components/headers/ContentSecurityPolicy"
                  },
                  "Cache-Control": {
                    "$ref": "#/components/headers/CacheControlNoStore"
                  },
                  "Server-Timing": {
                    "description": "`db;dur=MS, render;dur=MS`.",
                    "schema": {
                      "type": "string"
                    }
                  }
                },
                "content": {
                  "text/html": {
                    "schema": {
                      "type": "string"
                    }
                  }
                }
              },
              "400": {
                "description": "date is not `YYYY-MM-DD`, or name is not a device name (HTML); or the request bounds (JSON). Content-Type `text/html; charset=utf-8`.",
                "headers": {
                  "Content-Security-Policy": {
                    "$ref": "#/components/headers/ContentSecurityPolicy"
                  },
                  "Cache-Control": {
                    "$ref": "#/components/headers/CacheControlNoStore"
                  }
                },
                "content": {
                  "text/html": {
                    "schema": {
                      "type": "string"
                    }
                  },
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "414": {
                "$ref": "#/components/responses/UriTooLong"
              },
              "503": {
                "description": "Too many queries in progress, past the deadline, or the database failed: an error page. Content-Type `text/html; charset=utf-8`.",
                "headers": {
                  "Content-Security-Policy": {
                    "$ref": "#/components/headers/ContentSecurityPolicy"
                  },
                  "Cache-Control": {
                    "$ref": "#/components/headers/CacheControlNoStore"
                  }
                },
                "content": {
                  "text/html": {
                    "schema": {
                      "type": "string"
                    }
                  }
                }
              }
            }
          }
        }
      },
      "components": {
        "schemas": {
          "Error": {
            "type": "object",
            "required": [
              "error"
            ],
            "properties": {
              "error": {
                "type": "string",
                "description": "One line saying what is wrong."
              }
            },
            "description": "The body of every JSON error answer: `{\"error\": message}`."
          },
          "Health": {
            "type": "object",
            "required": [
              "status",
              "timestamp",
              "telemetry",
              "ledger",
              "aggregation",
              "mqtt",
              "mongodb",
              "journal",
              "ingest"
            ],
            "properties": {
              "status": {
                "type": "string",
                "enum": [
                  "healthy",
                  "degraded",
                  "unhealthy"
                ]
              },
              "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "The worker's clock, ISO 8601 UTC."
              },
              "telemetry": {
                "type": "object",
                "required": [
                  "total_events",
                  "unprocessed_events",
                  "events_last_hour",
                  "online_devices",
                  "errors"
                ],
                "properties": {
                  "total_events": {
                    "type": [
                      "integer",
                      "null"
                    ]
                  },
                  "unprocessed_events": {
                    "type": [
                      "integer",
                      "null"
                    ]
                  },
                  "events_last_hour": {
                    "type": [
                      "integer",
                      "null"
                    ]
                  },
                  "online_devices": {
                    "type": [
                      "integer",
                      "null"
                    ]
                  },
                  "errors": {
                    "type": "object",
                    "additionalProperties": {
                      "type": "string"
                    },
                    "description": "Figure name to the error that left it null (empty when every figure was read)."
                  }
                },
                "description": "Database figures, cached a few seconds; each is null when it could not be read (or the database is unreachable)."
              },
              "ledger": {
                "type": "object",
                "required": [
                  "events_processed",
                  "entries_created",
                  "entries_superseded",
                  "resets_detected",
                  "errors",
                  "is_processing",
                  "lag_seconds"
                ],
                "properties": {
                  "events_processed": {
                    "type": "integer"
                  },
                  "entries_created": {
                    "type": "integer"
                  },
                  "entries_superseded": {
                    "type": "integer"
                  },
                  "resets_detected": {
                    "type": "integer"
                  },
                  "errors": {
                    "type": "integer"
                  },
                  "is_processing": {
                    "type": "boolean"
                  },
                  "lag_seconds": {
                    "type": "number"
                  }
                }
              },
              "aggregation": {
                "type": "object",
                "required": [
                  "last_run",
                  "last_run_id",
                  "error"
                ],
                "properties": {
                  "last_run": {
                    "type": [
                      "string",
                      "null"
                    ],
                    "format": "date-time"
                  },
                  "last_run_id": {
                    "type": [
                      "string",
                      "null"
                    ]
                  },
                  "error": {
                    "type": [
                      "string",
                      "null"
                    ]
                  }
                }
              },
              "mqtt": {
                "type": "object",
                "required": [
                  "connected",
                  "last_message_at",
                  "last_error"
                ],
                "properties": {
                  "connected": {
                    "type": "boolean"
                  },
                  "last_message_at": {
                    "type": [
                      "string",
                      "null"
                    ],
                    "format": "date-time"
                  },
                  "last_error": {
                    "type": [
                      "string",
                      "null"
                    ]
                  }
                }
              },
              "mongodb": {
                "type": "object",
                "required": [
                  "reachable",
                  "last_error",
                  "last_success_at",
                  "write_concern",
                  "replica_set"
                ],
                "properties": {
                  "reachable": {
                    "type": "boolean",
                    "description": "Whether the database (MongoDB or PostgreSQL) answers."
                  },
                  "last_error": {
                    "type": [
                      "string",
                      "null"
                    ]
                  },
                  "last_success_at": {
                    "type": [
                      "string",
                      "null"
                    ],
                    "format": "date-time"
                  },
                  "write_concern": {
                    "type": "object",
                    "required": [
                      "in_force",
                      "failing",
                      "failing_since",
                      "last_failure",
                      "last_failure_at"
                    ],
                    "properties": {
                      "in_force": {
                        "type": [
                          "object",
                          "null"
                        ],
                        "description": "The write concern as sent (MongoDB), else null."
                      },
                      "failing": {
                        "type": "boolean"
                      },
                      "failing_since": {
                        "type": [
                          "string",
                          "null"
                        ],
                        "format": "date-time"
                      },
                      "last_failure": {
                        "type": [
                          "string",
                          "null"
                        ]
                      },
                      "last_failure_at": {
                        "type": [
                          "string",
                          "null"
                        ],
                        "format": "date-time"
                      }
                    }
                  },
                  "replica_set": {
                    "type": [
                      "object",
                      "null"
                    ],
                    "description": "Advice when the MongoDB URI does not name the replica set the server is in.",
                    "properties": {
                      "name": {
                        "type": "string"
                      },
                      "named_in_uri": {
                        "type": "boolean"
                      },
                      "uri_to_use": {
                        "type": "string"
                      },
                      "warning": {
                        "type": "string"
                      }
                    }
                  }
                }
              },
              "journal": {
                "type": "object",
                "required": [
                  "pending_records",
                  "drain_stalled_seconds",
                  "bytes",
                  "max_bytes",
                  "full",
                  "path"
                ],
                "properties": {
                  "pending_records": {
                    "type": "integer"
                  },
                  "drain_stalled_seconds": {
                    "type": [
                      "number",
                      "null"
                    ]
                  },
                  "bytes": {
                    "type": "integer"
                  },
                  "max_bytes": {
                    "type": "integer"
                  },
                  "full": {
                    "type": "boolean"
                  },
                  "path": {
                    "type": "string"
                  }
                }
              },
              "ingest": {
                "type": "object",
                "required": [
                  "events_inserted",
                  "duplicates",
                  "rejected",
                  "store_refused"
                ],
                "properties": {
                  "events_inserted": {
                    "type": "integer"
                  },
                  "duplicates": {
                    "type": "integer"
                  },
                  "rejected": {
                    "type": "integer"
                  },
                  "store_refused": {
                    "type": "integer"
                  }
                }
              }
            },
            "description": "The health document (contract section 7): the AutoVolt health shape plus the worker's own `mqtt`, `mongodb`, `journal` and `ingest` sections."
          },
          "ClassroomSummary": {
            "type": "object",
            "required": [
              "classroom",
              "kwh",
              "energy_wh",
              "cost",
              "currency",
              "devices",
              "coverage",
              "days"
            ],
            "properties": {
              "classroom": {
                "type": "string"
              },
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when some of the energy has no known cost (no tariff, or several currencies)."
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "devices": {
                "type": "integer"
              },
              "coverage": {
                "type": "number"
              },
              "days": {
                "type": "integer"
              }
            }
          },
          "SummaryResult": {
            "type": "object",
            "required": [
              "scope",
              "period",
              "period_type",
              "start_date",
              "end_date",
              "kwh",
              "energy_wh",
              "cost",
              "currency",
              "devices",
              "coverage",
              "days",
              "days_elapsed"
            ],
            "properties": {
              "scope": {
                "type": "string",
                "description": "The classroom, or `campus`."
              },
              "period": {
                "type": "string",
                "description": "`YYYY-MM-DD` or `YYYY-MM`, as asked."
              },
              "period_type": {
                "type": "string",
                "enum": [
                  "day",
                  "month"
                ]
              },
              "start_date": {
                "type": "string",
                "format": "date"
              },
              "end_date": {
                "type": "string",
                "format": "date"
              },
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when some of the energy has no known cost (no tariff, or several currencies)."
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "devices": {
                "type": "integer",
                "description": "Devices with a daily aggregate in the period."
              },
              "coverage": {
                "type": "number",
                "description": "Mean daily coverage of those devices over the period's days so far."
              },
              "days": {
                "type": "integer",
                "description": "Days of the period that have aggregates."
              },
              "days_elapsed": {
                "type": "integer",
                "description": "Days of the period that have begun."
              },
              "by_classroom": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/ClassroomSummary"
                },
                "description": "Per classroom; present only for the campus."
              }
            }
          },
          "TimelineBucket": {
            "type": "object",
            "required": [
              "label",
              "start",
              "end",
              "energy_wh",
              "kwh"
            ],
            "properties": {
              "label": {
                "type": "string",
                "description": "The local hour (`2026-11-01T10:00+05:30`) or date (`2026-11-01`)."
              },
              "start": {
                "type": "string",
                "format": "date-time"
              },
              "end": {
                "type": "string",
                "format": "date-time"
              },
              "energy_wh": {
                "type": "number"
              },
              "kwh": {
                "type": "number"
              }
            }
          },
          "TimelineResult": {
            "type": "object",
            "required": [
              "scope",
              "start",
              "end",
              "time_zone",
              "bucket",
              "kwh",
              "energy_wh",
              "buckets"
            ],
            "properties": {
              "scope": {
                "type": "string"
              },
              "start": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 UTC, inclusive."
              },
              "end": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 UTC, exclusive."
              },
              "time_zone": {
                "type": "string"
              },
              "bucket": {
                "type": "string",
                "enum": [
                  "hour",
                  "day"
                ]
              },
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "buckets": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/TimelineBucket"
                }
              }
            }
          },
          "ConfidenceCounts": {
            "type": "object",
            "required": [
              "high",
              "medium",
              "low"
            ],
            "properties": {
              "high": {
                "type": "integer"
              },
              "medium": {
                "type": "integer"
              },
              "low": {
                "type": "integer"
              }
            }
          },
          "SwitchBreakdown": {
            "type": "object",
            "required": [
              "name",
              "rated_w",
              "energy_wh",
              "kwh",
              "share",
              "on_hours"
            ],
            "properties": {
              "name": {
                "type": "string"
              },
              "rated_w": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "energy_wh": {
                "type": "number"
              },
              "kwh": {
                "type": "number"
              },
              "share": {
                "type": "number",
                "description": "Fraction of the device's ledger energy of the day."
              },
              "on_hours": {
                "type": "number"
              }
            }
          },
          "Unattributed": {
            "type": "object",
            "required": [
              "energy_wh",
              "kwh",
              "share"
            ],
            "properties": {
              "energy_wh": {
                "type": "number"
              },
              "kwh": {
                "type": "number"
              },
              "share": {
                "type": "number"
              }
            }
          },
          "DeviceDayBreakdown": {
            "type": "object",
            "required": [
              "esp32_name",
              "classroom",
              "source",
              "kwh",
              "energy_wh",
              "cost",
              "currency",
              "coverage",
              "confidence",
              "entries",
              "complete",
              "ledger_wh",
              "switches",
              "unattributed"
            ],
            "properties": {
              "esp32_name": {
                "type": "string"
              },
              "classroom": {
                "type": "string"
              },
              "source": {
                "type": "string",
                "enum": [
                  "aggregate",
                  "ledger"
                ],
                "description": "`aggregate` (daily_aggregates) or `ledger` (no aggregate yet: live ledger entries, cost null)."
              },
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when some of the energy has no known cost (no tariff, or several currencies)."
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "coverage": {
                "type": "number"
              },
              "confidence": {
                "$ref": "#/components/schemas/ConfidenceCounts"
              },
              "entries": {
                "type": "integer"
              },
              "complete": {
                "type": [
                  "boolean",
                  "null"
                ]
              },
              "ledger_wh": {
                "type": "number"
              },
              "switches": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/SwitchBreakdown"
                }
              },
              "unattributed": {
                "$ref": "#/components/schemas/Unattributed"
              }
            }
          },
          "DeviceBreakdownResult": {
            "type": "object",
            "required": [
              "date",
              "scope",
              "kwh",
              "energy_wh",
              "cost",
              "currency",
              "devices"
            ],
            "properties": {
              "date": {
                "type": "string",
                "format": "date"
              },
              "scope": {
                "type": "string"
              },
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when some of the energy has no known cost (no tariff, or several currencies)."
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "devices": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/DeviceDayBreakdown"
                }
              }
            }
          },
          "MonthFigures": {
            "type": "object",
            "required": [
              "kwh",
              "energy_wh",
              "cost",
              "currency",
              "devices"
            ],
            "properties": {
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when some of the energy has no known cost (no tariff, or several currencies)."
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "devices": {
                "type": "integer"
              }
            }
          },
          "MonthChange": {
            "type": "object",
            "required": [
              "kwh",
              "energy_wh",
              "energy_percent",
              "cost",
              "cost_percent"
            ],
            "properties": {
              "kwh": {
                "type": "number"
              },
              "energy_wh": {
                "type": "number"
              },
              "energy_percent": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when the previous month's energy is 0."
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ],
                "description": "Null when either month's cost is unknown."
              },
              "cost_percent": {
                "type": [
                  "number",
                  "null"
                ]
              }
            }
          },
          "MonthComparison": {
            "type": "object",
            "required": [
              "classroom",
              "current",
              "previous",
              "change"
            ],
            "properties": {
              "classroom": {
                "type": "string",
                "description": "The classroom, or the scope for the total."
              },
              "current": {
                "$ref": "#/components/schemas/MonthFigures"
              },
              "previous": {
                "$ref": "#/components/schemas/MonthFigures"
              },
              "change": {
                "$ref": "#/components/schemas/MonthChange"
              }
            }
          },
          "MonthlyResult": {
            "type": "object",
            "required": [
              "month",
              "previous_month",
              "scope",
              "total",
              "classrooms"
            ],
            "properties": {
              "month": {
                "type": "string"
              },
              "previous_month": {
                "type": "string"
              },
              "scope": {
                "type": "string"
              },
              "total": {
                "$ref": "#/components/schemas/MonthComparison"
              },
              "classrooms": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/MonthComparison"
                }
              }
            }
          },
          "TariffDocument": {
            "type": "object",
            "required": [
              "id",
              "cost_per_kwh",
              "currency",
              "effective_from",
              "classroom",
              "notes",
              "created_at"
            ],
            "properties": {
              "id": {
                "type": "string"
              },
              "cost_per_kwh": {
                "type": "number"
              },
              "currency": {
                "type": "string"
              },
              "effective_from": {
                "type": "string",
                "format": "date-time",
                "description": "Local time with its offset, e.g. `2026-11-01T00:00:00.000+05:30`."
              },
              "classroom": {
                "type": [
                  "string",
                  "null"
                ],
                "description": "Null: the global tariff."
              },
              "notes": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "created_at": {
                "type": "string",
                "format": "date-time"
              }
            },
            "description": "A tariff (cost) version."
          },
          "NewTariff": {
            "type": "object",
            "required": [
              "cost_per_kwh",
              "effective_from"
            ],
            "properties": {
              "cost_per_kwh": {
                "type": "number",
                "minimum": 0
              },
              "effective_from": {
                "type": "string",
                "description": "`YYYY-MM-DD` (local midnight) or an ISO 8601 instant.",
                "examples": [
                  "2026-11-01",
                  "2026-11-01T00:00:00+05:30"
                ]
              },
              "classroom": {
                "type": [
                  "string",
                  "null"
                ],
                "description": "A classroom of the device registry; absent or null: the global tariff."
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ],
                "pattern": "^[A-Za-z]{3}$",
                "description": "A 3-letter code (upper-cased); default `INR`."
              },
              "notes": {
                "type": [
                  "string",
                  "null"
                ]
              }
            }
          },
          "AggregateChange": {
            "type": "object",
            "required": [
              "kind",
              "key",
              "esp32_name",
              "classroom",
              "new_energy_wh",
              "version"
            ],
            "properties": {
              "kind": {
                "type": "string",
                "enum": [
                  "daily",
                  "monthly"
                ]
              },
              "key": {
                "type": "string",
                "description": "The date (daily) or month (monthly)."
              },
              "esp32_name": {
                "type": "string"
              },
              "classroom": {
                "type": "string"
              },
              "old_energy_wh": {
                "type": "number",
                "description": "Absent when there was no figure before."
              },
              "new_energy_wh": {
                "type": "number"
              },
              "old_cost": {
                "type": "number",
                "description": "Absent when unknown."
              },
              "new_cost": {
                "type": "number",
                "description": "Absent when unknown."
              },
              "version": {
                "type": "integer"
              }
            }
          },
          "TariffChange": {
            "type": "object",
            "required": [
              "tariff",
              "recalculated",
              "changed_count",
              "changes"
            ],
            "properties": {
              "tariff": {
                "$ref": "#/components/schemas/TariffDocument"
              },
              "recalculated": {
                "type": "integer",
                "description": "Aggregates recalculated (each got a new version)."
              },
              "changed_count": {
                "type": "integer",
                "description": "How many of them changed figures."
              },
              "changes": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/AggregateChange"
                },
                "description": "The changes, at most 1,000 listed."
              }
            }
          },
          "RecalculateRequest": {
            "type": "object",
            "required": [
              "start",
              "end"
            ],
            "properties": {
              "start": {
                "type": "string",
                "format": "date",
                "pattern": "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$"
              },
              "end": {
                "type": "string",
                "format": "date",
                "pattern": "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$",
                "description": "Inclusive; at most 366 days after start."
              },
              "classroom": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "esp32_name": {
                "type": [
                  "string",
                  "null"
                ]
              }
            }
          },
          "RecalculationReport": {
            "type": "object",
            "required": [
              "recalculated",
              "changed_count",
              "changed"
            ],
            "properties": {
              "recalculated": {
                "type": "integer"
              },
              "changed_count": {
                "type": "integer"
              },
              "changed": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/AggregateChange"
                },
                "description": "The aggregates whose figures changed, at most 1,000 listed."
              }
            }
          },
          "AlarmRecord": {
            "type": "object",
            "required": [
              "id",
              "rule",
              "kind",
              "esp32_name",
              "classroom",
              "severity",
              "status",
              "raised_at"
            ],
            "properties": {
              "id": {
                "type": "string"
              },
              "rule": {
                "type": "string"
              },
              "kind": {
                "type": "string",
                "description": "`over_power`, `left_on_after_hours`, `offline`, `counter_stuck`, `rejects`."
              },
              "esp32_name": {
                "type": "string"
              },
              "classroom": {
                "type": "string"
              },
              "severity": {
                "type": "string"
              },
              "status": {
                "type": "string",
                "description": "`active` or `cleared`."
              },
              "raised_at": {
                "type": "string",
                "description": "ISO 8601 UTC."
              },
              "cleared_at": {
                "type": "string",
                "description": "ISO 8601 UTC; absent while active."
              },
              "last_value": {
                "type": "number",
                "description": "Absent when none."
              },
              "acknowledged_at": {
                "type": "string",
                "description": "ISO 8601 UTC; absent until acknowledged."
              },
              "acknowledged_by": {
                "type": "string",
                "description": "Absent until acknowledged."
              }
            },
            "description": "One alarm (the `alarms` document); optional fields are left out when unset."
          },
          "AlarmList": {
            "type": "object",
            "required": [
              "status",
              "count",
              "alarms"
            ],
            "properties": {
              "status": {
                "type": "string",
                "enum": [
                  "active",
                  "all"
                ]
              },
              "count": {
                "type": "integer"
              },
              "alarms": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/AlarmRecord"
                },
                "description": "Newest first."
              }
            }
          },
          "AckRequest": {
            "type": "object",
            "properties": {
              "by": {
                "type": [
                  "string",
                  "null"
                ],
                "description": "Who acknowledges (trimmed, at most 200 characters kept); default `api`."
              }
            }
          },
          "AckAnswer": {
            "type": "object",
            "required": [
              "acknowledged",
              "alarm"
            ],
            "properties": {
              "acknowledged": {
                "type": "boolean",
                "description": "False when it was acknowledged already (the alarm as it stands)."
              },
              "alarm": {
                "$ref": "#/components/schemas/AlarmRecord"
              }
            }
          },
          "AlarmEvent": {
            "type": "object",
            "required": [
              "id",
              "type",
              "at",
              "alarm"
            ],
            "properties": {
              "id": {
                "type": "integer"
              },
              "type": {
                "type": "string",
                "enum": [
                  "raise",
                  "clear",
                  "ack"
                ]
              },
              "at": {
                "type": "string"
              },
              "alarm": {
                "$ref": "#/components/schemas/AlarmRecord"
              }
            },
            "description": "The `data` of one Server-Sent Event of the alarm stream."
          },
          "ConfidenceMap": {
            "type": "object",
            "required": [
              "high",
              "medium",
              "low"
            ],
            "properties": {
              "high": {
                "type": "integer"
              },
              "medium": {
                "type": "integer"
              },
              "low": {
                "type": "integer"
              }
            }
          },
          "StatementSummary": {
            "type": "object",
            "required": [
              "id",
              "month",
              "scope",
              "version",
              "status",
              "energy_wh",
              "cost",
              "currency",
              "created_at",
              "frozen_at",
              "frozen_by"
            ],
            "properties": {
              "id": {
                "type": "string"
              },
              "month": {
                "type": "string"
              },
              "scope": {
                "type": "string",
                "description": "`campus`, `classroom:NAME` or `group:NAME`."
              },
              "version": {
                "type": "integer"
              },
              "status": {
                "type": "string",
                "enum": [
                  "draft",
                  "frozen"
                ]
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "created_at": {
                "type": "string",
                "format": "date-time"
              },
              "frozen_at": {
                "type": [
                  "string",
                  "null"
                ],
                "format": "date-time"
              },
              "frozen_by": {
                "type": [
                  "string",
                  "null"
                ]
              }
            }
          },
          "StatementList": {
            "type": "object",
            "required": [
              "statements"
            ],
            "properties": {
              "statements": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/StatementSummary"
                }
              }
            }
          },
          "StatementSegment": {
            "type": "object",
            "required": [
              "cost_version_id",
              "cost_per_kwh",
              "from",
              "to",
              "energy_wh",
              "cost"
            ],
            "properties": {
              "cost_version_id": {
                "type": "string"
              },
              "cost_per_kwh": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "from": {
                "type": "string",
                "format": "date"
              },
              "to": {
                "type": "string",
                "format": "date"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": "number"
              }
            }
          },
          "StatementLine": {
            "type": "object",
            "required": [
              "esp32_name",
              "classroom",
              "energy_wh",
              "cost",
              "unpriced_wh",
              "days",
              "coverage",
              "confidence",
              "segments"
            ],
            "properties": {
              "esp32_name": {
                "type": "string"
              },
              "classroom": {
                "type": "string"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "unpriced_wh": {
                "type": "number"
              },
              "days": {
                "type": "integer"
              },
              "coverage": {
                "type": "number"
              },
              "confidence": {
                "$ref": "#/components/schemas/ConfidenceMap"
              },
              "segments": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/StatementSegment"
                }
              }
            }
          },
          "StatementDay": {
            "type": "object",
            "required": [
              "date",
              "energy_wh",
              "cost",
              "devices"
            ],
            "properties": {
              "date": {
                "type": "string",
                "format": "date"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "devices": {
                "type": "integer"
              }
            }
          },
          "StatementCoverage": {
            "type": "object",
            "required": [
              "days_in_month",
              "device_days",
              "mean",
              "lowest",
              "confidence"
            ],
            "properties": {
              "days_in_month": {
                "type": "integer"
              },
              "device_days": {
                "type": "integer"
              },
              "mean": {
                "type": "number"
              },
              "lowest": {
                "type": "number"
              },
              "confidence": {
                "$ref": "#/components/schemas/ConfidenceMap"
              }
            }
          },
          "ReviewTicket": {
            "type": "object",
            "required": [
              "id",
              "esp32_name",
              "date",
              "kind",
              "detail"
            ],
            "properties": {
              "id": {
                "type": "string"
              },
              "esp32_name": {
                "type": "string"
              },
              "date": {
                "type": "string"
              },
              "kind": {
                "type": "string"
              },
              "detail": {
                "type": "string"
              }
            }
          },
          "StatementSource": {
            "type": "object",
            "required": [
              "id",
              "version",
              "date",
              "esp32_name",
              "energy_wh",
              "cost",
              "cost_version_ids"
            ],
            "properties": {
              "id": {
                "type": "string"
              },
              "version": {
                "type": "integer"
              },
              "date": {
                "type": "string",
                "format": "date"
              },
              "esp32_name": {
                "type": "string"
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "cost_version_ids": {
                "type": "array",
                "items": {
                  "type": "string"
                }
              }
            }
          },
          "StatementExport": {
            "type": "object",
            "required": [
              "sha256",
              "bytes"
            ],
            "properties": {
              "sha256": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$"
              },
              "bytes": {
                "type": "integer"
              }
            }
          },
          "Statement": {
            "type": "object",
            "required": [
              "id",
              "month",
              "scope",
              "classrooms",
              "version",
              "status",
              "currency",
              "time_zone",
              "created_at",
              "frozen_at",
              "frozen_by",
              "energy_wh",
              "cost",
              "unpriced_wh",
              "segments",
              "lines",
              "days",
              "coverage",
              "review_tickets",
              "aggregates",
              "exports"
            ],
            "properties": {
              "id": {
                "type": "string"
              },
              "month": {
                "type": "string"
              },
              "scope": {
                "type": "object",
                "required": [
                  "kind",
                  "name"
                ],
                "properties": {
                  "kind": {
                    "type": "string",
                    "enum": [
                      "campus",
                      "classroom",
                      "group"
                    ]
                  },
                  "name": {
                    "type": [
                      "string",
                      "null"
                    ]
                  }
                }
              },
              "classrooms": {
                "type": "array",
                "items": {
                  "type": "string"
                },
                "description": "The classrooms of the scope (empty for the campus)."
              },
              "version": {
                "type": "integer"
              },
              "status": {
                "type": "string",
                "enum": [
                  "draft",
                  "frozen"
                ]
              },
              "currency": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "time_zone": {
                "type": "string"
              },
              "created_at": {
                "type": "string",
                "format": "date-time"
              },
              "frozen_at": {
                "type": [
                  "string",
                  "null"
                ],
                "format": "date-time"
              },
              "frozen_by": {
                "type": [
                  "string",
                  "null"
                ]
              },
              "energy_wh": {
                "type": "number"
              },
              "cost": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "unpriced_wh": {
                "type": "number"
              },
              "segments": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/StatementSegment"
                }
              },
              "lines": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/StatementLine"
                }
              },
              "days": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/StatementDay"
                }
              },
              "coverage": {
                "$ref": "#/components/schemas/StatementCoverage"
              },
              "review_tickets": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/ReviewTicket"
                }
              },
              "aggregates": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/StatementSource"
                },
                "description": "The device-days the statement rests on."
              },
              "exports": {
                "type": "object",
                "additionalProperties": {
                  "$ref": "#/components/schemas/StatementExport"
                },
                "description": "Format (`csv`, `pdf`, `xlsx`) to the export recorded at freezing; empty for a draft."
              }
            },
            "description": "A monthly statement as stored (times in local time with their offset)."
          },
          "GenerateRequest": {
            "type": "object",
            "required": [
              "month"
            ],
            "properties": {
              "month": {
                "type": "string",
                "pattern": "^(19[7-9]\\d|[2-9]\\d{3})-(0[1-9]|1[0-2])$",
                "description": "`YYYY-MM`, a month that has begun."
              },
              "classroom": {
                "type": [
                  "string",
                  "null"
                ],
                "description": "Give classroom or group, not both; neither: the campus."
              },
              "group": {
                "type": [
                  "string",
                  "null"
                ],
                "description": "A group of the device registry."
              }
            }
          },
          "FreezeRequest": {
            "type": "object",
            "properties": {
              "by": {
                "type": [
                  "string",
                  "null"
                ],
                "description": "Who freezes it; empty or absent: `api`."
              }
            }
          },
          "TelemetryPayload": {
            "type": "object",
            "required": [
              "esp32_name",
              "energy_wh_total",
              "switch_state"
            ],
            "properties": {
              "esp32_name": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                "description": "Required over HTTP: it stands in for the MQTT topic."
              },
              "timestamp": {
                "type": [
                  "number",
                  "string",
                  "null"
                ],
                "description": "Epoch seconds (above 10^11: milliseconds), a numeric string or an ISO 8601 instant; absent or untrusted: the receive time."
              },
              "energy_wh_total": {
                "type": "number",
                "minimum": 0
              },
              "switch_state": {
                "oneOf": [
                  {
                    "type": "array",
                    "items": {
                      "enum": [
                        0,
                        1,
                        true,
                        false
                      ]
                    },
                    "maxItems": 32,
                    "description": "0/1 by switch index."
                  },
                  {
                    "type": "object",
                    "maxProperties": 32,
                    "propertyNames": {
                      "pattern": "^[A-Za-z0-9_-]{1,64}$"
                    },
                    "additionalProperties": {
                      "enum": [
                        0,
                        1,
                        true,
                        false
                      ]
                    },
                    "description": "Switch name to true/false or 0/1."
                  }
                ]
              },
              "power_w": {
                "type": [
                  "number",
                  "null"
                ],
                "minimum": 0
              },
              "boot_id": {
                "type": [
                  "string",
                  "integer",
                  "null"
                ]
              },
              "seq": {
                "type": [
                  "integer",
                  "null"
                ]
              },
              "sequence_no": {
                "type": [
                  "integer",
                  "null"
                ],
                "description": "Alias of seq."
              },
              "uptime_s": {
                "type": [
                  "number",
                  "null"
                ]
              },
              "fw_version": {
                "type": [
                  "string",
                  "null"
                ]
              }
            },
            "additionalProperties": true,
            "description": "One telemetry message (contract section 3), at most 16 KiB; other keys are kept in the event's `extra`."
          },
          "IngestRefusal": {
            "type": "object",
            "required": [
              "index",
              "reason",
              "detail"
            ],
            "properties": {
              "index": {
                "type": "integer",
                "description": "Position in the request (0 for a single payload)."
              },
              "esp32_name": {
                "type": "string",
                "description": "Absent when the message has no string esp32_name."
              },
              "reason": {
                "type": "string",
                "description": "A reject reason code: `invalid_device_name`, `device_name_mismatch`, `wrong_shape`, `missing_energy`, `invalid_energy`, `invalid_switch_state`, `payload_too_large`, ..."
              },
              "detail": {
                "type": "string"
              }
            }
          },
          "IngestAnswer": {
            "type": "object",
            "required": [
              "accepted",
              "rejected"
            ],
            "properties": {
              "accepted": {
                "type": "integer"
              },
              "rejected": {
                "type": "array",
                "items": {
                  "$ref": "#/components/schemas/IngestRefusal"
                }
              }
            }
          },
          "OpenAPIDocumentBody": {
            "type": "object",
            "required": [
              "openapi",
              "info",
              "paths"
            ],
            "properties": {
              "openapi": {
                "type": "string"
              },
              "info": {
                "type": "object"
              },
              "paths": {
                "type": "object"
              }
            },
            "description": "This document."
          }
        },
        "responses": {
          "QueryBounds": {
            "description": "The request bounds: more than 16 query parameters, or a query parameter name longer than 64 bytes or value longer than 256 bytes.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            }
          },
          "UriTooLong": {
            "description": "The request target (path and query) is longer than 4096 bytes.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            }
          },
          "ContentTooLarge": {
            "description": "The request announces a body (Content-Length) larger than 65536 bytes.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            }
          },
          "Unauthorized": {
            "description": "Missing or wrong bearer token.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            }
          },
          "Forbidden": {
            "description": "Write endpoints are disabled: no AUTOVOLT_API_TOKEN_FILE is configured.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            }
          },
          "WriteUnavailable": {
            "description": "The database failed the write (`database unavailable: ...`).",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            }
          },
          "ReadUnavailable": {
            "description": "Too many queries in progress or past the query deadline (with Retry-After), or the database failed.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "headers": {
              "Retry-After": {
                "$ref": "#/components/headers/RetryAfter"
              }
            }
          }
        },
        "headers": {
          "RetryAfter": {
            "description": "Seconds to wait before retrying (sent when retrying soon can help).",
            "schema": {
              "type": "integer"
            }
          },
          "ContentSecurityPolicy": {
            "description": "The dashboard's policy: no external scripts, styles or fonts; inline scripts by hash.",
            "schema": {
              "type": "string"
            }
          },
          "CacheControlNoStore": {
            "description": "`no-store`.",
            "schema": {
              "type": "string"
            }
          }
        },
        "securitySchemes": {
          "bearerToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The token of AUTOVOLT_API_TOKEN_FILE; compared in constant time. Without a configured token the write routes answer 403."
          },
          "ingestSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "X-AutoVolt-Signature",
            "description": "`sha256=<hex HMAC-SHA256 of \"<X-AutoVolt-Timestamp>.<body>\">` keyed with the board's `hmac_secret` or AUTOVOLT_INGEST_SECRET_FILE (telemetry ingest only; a replay inside 5 minutes is 409)."
          },
          "ingestTimestamp": {
            "type": "apiKey",
            "in": "header",
            "name": "X-AutoVolt-Timestamp",
            "description": "Epoch seconds of the signature, within 5 minutes of the worker's clock."
          }
        }
      }
    }
    """#
}
