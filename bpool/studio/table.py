"""THE table of page facts: every selector, text and URL pattern the driver uses.

Google changes the AI Studio page without notice, so nothing else in bpool spells a selector:
the driver, the page scripts (page_js.py, which take selectors as arguments) and the tap
(tap.js, configured from here) all read this table. Most elements have several candidates,
current first, older ones after; a candidate that matches nothing costs nothing. Where each fact
comes from is in docs/aistudio-page.md (the page contract) next to this repository.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudioTable:
    # ---------------------------------------------------------------- URLs and page states
    new_chat_path: str = "/prompts/new_chat"
    model_query: str = "model"  # new_chat?model=<id> opens the chat on that model
    # The tap takes a request only when the last segment of its URL path is exactly one of
    # these: the page also calls StreamGenerateContentPerUserQuota and CountTokens.
    generate_method: str = "GenerateContent"
    models_method: str = "ListModels"
    signin_hosts: tuple[str, ...] = ("accounts.google.com",)
    signin_path_markers: tuple[str, ...] = ("/signin", "ServiceLogin")
    signin_title: str = "Sign in"
    region_title: str = "Available regions"
    # A redirect here means the account cannot use AI Studio at all.
    unavailable_hosts: tuple[str, ...] = ("ai.google.dev",)
    ready: tuple[str, ...] = ("ms-prompt-box", "ms-prompt-input-wrapper", "ms-chunk-editor")
    # Terms-of-service consent for accounts that never used AI Studio (lower case).
    consent_phrases: tuple[str, ...] = (
        "i consent to the google apis terms of service",
        "gemini api additional terms of service",
    )
    pref_key: str = "aiStudioUserPreference"  # localStorage, a JSON object
    pref_model_field: str = "promptModel"  # "models/<id>": the model a new chat opens with
    # Set before the page's own scripts run, so first-run popups never show.
    pref_flags: tuple[tuple[str, bool], ...] = (
        ("warmWelcomeDisplayed", True),
        ("fileCopyrightAcknowledged", True),
    )
    account_email: tuple[str, ...] = (
        '[data-test-id="account-email"]',
        'a[aria-label^="Google Account"]',
        '[aria-label*="@"]',
        'img[alt*="@"]',
    )

    # ---------------------------------------------------------------- first-run popups
    # Buttons are only ever clicked inside these (never a page-wide "Continue").
    overlay_scopes: tuple[str, ...] = (
        ".cdk-overlay-container",
        "mat-dialog-container",
        '[role="dialog"]',
        "ms-g1-welcome-dialog",
        "mat-snack-bar-container",
        ".glue-cookie-notification-bar",
    )
    welcome_dialog: tuple[str, ...] = ("ms-g1-welcome-dialog",)
    welcome_close: tuple[str, ...] = (
        'button[aria-label="Close dialog"]',
        'button[aria-label="Close"]',
        "button",
    )
    backdrop: str = ".cdk-overlay-backdrop"
    dialog_panes: str = "mat-dialog-container, .mat-mdc-dialog-container, [role=\"dialog\"]"
    cookie_accept: tuple[str, ...] = (
        ".glue-cookie-notification-bar__accept",
        "button[data-glue-cookie-notification-bar-accept]",
    )
    dismiss_labels: tuple[str, ...] = ("Got it", "Dismiss", "Not now", "Skip")

    # ---------------------------------------------------------------- temporary chat
    temporary_toggle: tuple[str, ...] = (
        'button[aria-label="Temporary chat toggle"]',
        "button[data-test-incognito-toggle]",
        'button[aria-label="Toggle temporary chat"]',
    )
    more_actions: tuple[str, ...] = ('button[aria-label="View more actions"]',)
    # How the page shows that temporary chat is on: a header indicator reading "Temporary
    # chat", a checkmark in the menu item, or the toggle's own pressed / active state.
    temporary_indicator: tuple[str, ...] = (
        "ms-incognito-mode-indicator [data-test-id=\"main-text\"]",
        "ms-incognito-mode-indicator .main-text",
        "ms-incognito-mode-indicator",
    )
    temporary_indicator_text: str = "temporary chat"
    temporary_checkmark: tuple[str, ...] = ("[data-test-incognito-checkmark]",)
    temporary_active_class: str = "ms-button-active"

    # ---------------------------------------------------------------- run-settings panel
    # The panel's content is removed from the DOM while it is collapsed; it covers Run when open.
    panel_toggle: tuple[str, ...] = (
        'button[aria-label="Toggle run settings panel"]',
        "button.runsettings-toggle-button",
    )
    panel_close: tuple[str, ...] = (
        'button[aria-label="Close run settings panel"]',
        'ms-run-settings button[iconname="close"]',
    )
    model_name: tuple[str, ...] = ('[data-test-id="model-name"]',)
    temperature: tuple[str, ...] = (
        'ms-slider input[type="number"][max="2"]',
        'input.slider-number-input[aria-valuemax="2"]',
    )
    top_p: tuple[str, ...] = (
        'ms-slider input[type="number"][max="1"]',
        'input.slider-number-input[aria-valuemax="1"]',
    )
    max_tokens: tuple[str, ...] = ('input[aria-label="Maximum output tokens"]',)
    stop_input: tuple[str, ...] = ('input[aria-label="Add stop token"]',)
    stop_chip_remove: str = 'mat-chip button.remove-button[aria-label*="Remove"]'
    thinking_switch: tuple[str, ...] = (
        'button[role="switch"][aria-label="Toggle thinking mode"]',
        'mat-slide-toggle[data-test-toggle="enable-thinking"] button[role="switch"]',
    )
    budget_manual: tuple[str, ...] = (
        'button[role="switch"][aria-label="Toggle thinking budget between auto and manual"]',
        'mat-slide-toggle[data-test-toggle="manual-budget"] button[role="switch"]',
    )
    budget_input: tuple[str, ...] = (
        '[data-test-id="user-setting-budget-animation-wrapper"] input[type="number"]',
    )
    thinking_level: tuple[str, ...] = (
        'mat-select[aria-label="Thinking Level"]',
        '[role="combobox"][aria-label="Thinking Level"]',
        'mat-select[aria-label="Thinking level"]',
        "ms-thinking-level-setting mat-select",
    )
    select_value: str = ".mat-mdc-select-value-text, .mat-select-value-text"
    select_option: str = '[role="option"], mat-option'
    search_toggle: tuple[str, ...] = (
        'div[data-test-id="searchAsAToolTooltip"] mat-slide-toggle button',
        '[data-test-id="searchAsAToolTooltip"] button[role="switch"]',
    )
    tools_expand: tuple[str, ...] = ('button[aria-label="Expand or collapse tools"]',)
    # Stop sequences, output length and top-p sit in a collapsible "Advanced settings" section.
    advanced_expand: tuple[str, ...] = ('button[aria-label="Expand or collapse advanced settings"]',)

    # ---------------------------------------------------------------- submitting
    prompt_textarea: tuple[str, ...] = (
        'ms-prompt-input-wrapper textarea[aria-label="Enter a prompt"]',
        'ms-prompt-box textarea[aria-label="Enter a prompt"]',
        "ms-prompt-input-wrapper textarea",
        "ms-prompt-box textarea",
        "textarea.textarea",
    )
    autosize_wrapper: str = "ms-autosize-textarea"  # mirrors the text in data-value
    run_button: tuple[str, ...] = (
        "ms-run-button button.ctrl-enter-submits",
        'ms-run-button button[type="submit"]',
        'button[aria-label="Run"]',
    )
    stop_button: str = 'button[aria-label="Stop generating"]'
    new_chat_button: str = 'button[aria-label="New chat"]'
    dialog: str = ".mat-mdc-dialog-inner-container"
    discard_label: str = "Discard and continue"
    chat_turn: str = "ms-chat-turn"

    # ---------------------------------------------------------------- attachments
    # "Insert assets" opens a menu whose "Upload a file" item holds a hidden file input (CJack);
    # some pages have the input in the DOM already (JaeWangL: input[type="file"].file-input).
    add_media: tuple[str, ...] = (
        'button[data-test-id="add-media-button"]',
        'button[aria-label^="Insert assets"]',
        'button[aria-label^="Insert images"]',
    )
    file_input: tuple[str, ...] = (
        'div[role="menu"] button[role="menuitem"][aria-label="Upload a file"] input[type="file"]',
        'div[role="menu"] button[role="menuitem"][aria-label="Upload File"] input[type="file"]',
        'input[type="file"].file-input',
    )
    upload_menu: str = 'div[role="menu"]'
    # An uploaded file's chip, and a file still uploading (markup: assumption, see the sim).
    attachment_chip: tuple[str, ...] = (
        "ms-prompt-input-wrapper .file-chip",
        "ms-prompt-box .file-chip",
    )
    upload_progress: tuple[str, ...] = (
        "ms-prompt-input-wrapper [role=\"progressbar\"]",
        "ms-prompt-input-wrapper mat-progress-spinner",
        "ms-prompt-box mat-progress-spinner",
    )
    # The copyright notice after a first upload: CJack clicks an aria-label match, else one of
    # these labels inside an overlay (only one that speaks of copyright, here).
    upload_ack: tuple[str, ...] = (
        'button[aria-label*="copyright" i]',
        'button[aria-label*="acknowledge" i]',
    )
    upload_ack_labels: tuple[str, ...] = ("Acknowledge", "I agree", "Agree", "Allow", "Continue",
                                          "OK", "Confirm", "Yes")
    upload_ack_phrase: str = "copyright"

    # ---------------------------------------------------------------- notices
    toasts: str = "div.toast.warning, div.toast.error"
    toast_text: str = "span.content-text"
    quota_callout: str = "ms-callout.error-callout .message, ms-callout.warning-callout .message"
    # "quota" phrases mean hours of rest; "rate" phrases minutes. The live quota message ("You
    # exceeded your current quota, ... rate-limits. * Quota exceeded for metric: ...") is the
    # same for a burst and a daily limit; outcomes.py tells a daily one by the metric it names.
    quota_phrases: tuple[str, ...] = ("exceeded quota", "out of free generations")
    rate_phrases: tuple[str, ...] = ("too many requests", "rate limit", "rate-limits",
                                     "exceeded your current quota")

    # ---------------------------------------------------------------- our own names on the page
    binding: str = "__bpoolTap"  # the exposed binding tap.js posts to


STUDIO = StudioTable()
