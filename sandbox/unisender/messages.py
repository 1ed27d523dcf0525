# ruff: noqa: RUF001, RUF002 - Cyrillic letters are the point of the translations
"""Error and warning texts in every language the `/{LANG}/api/` segment can ask for.

The reference: "LANG – the language of API server messages, ru, en, it are possible at the
moment" (docs); the official PHP wrapper also allows `ua`. Codes never change with the language,
only the `error` text does. Whether a given message is really translated (e.g.
`Contact "x" not found`) is [unverified]; the emulator takes the stricter reading and translates
every message it can, so a client that branches on English text while calling `/ru/api` fails here
instead of in production. The English texts are the documented ones where the docs give them.

The three "frequent errors without a code" are quoted in English on the Russian, English and
Ukrainian docs pages alike, so they stay English in every language.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "ru", "ua", "it")
DEFAULT_LANGUAGE = "en"

_RATE = {
    # Docs (EN and UA error tables): the meaning of both api_call_limit_* codes.
    "en": "The restriction on the number of calls of API methods per unit of time was triggered. "
    "At the moment, it is {limit} calls per {seconds} seconds{scope}.",
    "ru": "Сработало ограничение на количество вызовов методов API в единицу времени. "
    "Сейчас это {limit} вызовов за {seconds} секунд{scope}.",
    "ua": "Спрацювало обмеження за викликом методів API на одиницю часу. "
    "Наразі це {limit} викликів за {seconds} секунд{scope}.",
    "it": "È scattato il limite di chiamate ai metodi API per unità di tempo. "
    "Al momento è di {limit} chiamate ogni {seconds} secondi{scope}.",
}

CATALOG: dict[str, dict[str, str]] = {
    "rate_limit": _RATE,
    "invalid_api_key": {
        "en": "Invalid API key",
        "ru": "Неверный ключ доступа к API",
        "ua": "Невірний ключ доступу до API",
        "it": "Chiave API non valida",
    },
    "unknown_method": {
        "en": 'Unknown method "{method}"',
        "ru": 'Неизвестный метод "{method}"',
        "ua": 'Невідомий метод "{method}"',
        "it": 'Metodo sconosciuto "{method}"',
    },
    "contact_not_found": {
        "en": 'Contact "{contact}" not found',
        "ru": 'Контакт "{contact}" не найден',
        "ua": 'Контакт "{contact}" не знайдено',
        "it": 'Contatto "{contact}" non trovato',
    },
    "missing_arg": {
        "en": 'Required argument "{name}" is missing',
        "ru": 'Не указан обязательный аргумент "{name}"',
        "ua": 'Не вказано обов\'язковий аргумент "{name}"',
        "it": 'Manca l\'argomento obbligatorio "{name}"',
    },
    "bad_arg": {
        "en": 'Invalid value of argument "{name}": {detail}',
        "ru": 'Неверное значение аргумента "{name}": {detail}',
        "ua": 'Невірне значення аргументу "{name}": {detail}',
        "it": 'Valore non valido per l\'argomento "{name}": {detail}',
    },
    "list_not_found": {
        "en": 'List with id "{list_id}" not found',
        "ru": 'Список с id "{list_id}" не найден',
        "ua": 'Список з id "{list_id}" не знайдено',
        "it": 'Lista con id "{list_id}" non trovata',
    },
    "list_exists": {
        "en": 'List with title "{title}" already exists',
        "ru": 'Список с названием "{title}" уже существует',
        "ua": 'Список з назвою "{title}" вже існує',
        "it": 'Esiste già una lista con il titolo "{title}"',
    },
    "field_name_bad": {
        "en": 'Field name "{name}" must start with a latin letter and contain only latin '
        "letters, digits and _",
        "ru": 'Имя поля "{name}" должно начинаться с латинской буквы и содержать только '
        "латинские буквы, цифры и _",
        "ua": 'Ім\'я поля "{name}" має починатися з латинської літери й містити лише '
        "латинські літери, цифри та _",
        "it": 'Il nome del campo "{name}" deve iniziare con una lettera latina e contenere solo '
        "lettere latine, cifre e _",
    },
    "field_reserved": {
        "en": 'Field name "{name}" is reserved',
        "ru": 'Имя поля "{name}" зарезервировано',
        "ua": 'Ім\'я поля "{name}" зарезервовано',
        "it": 'Il nome del campo "{name}" è riservato',
    },
    "field_type_bad": {
        "en": 'Invalid field type "{type}"',
        "ru": 'Неверный тип поля "{type}"',
        "ua": 'Невірний тип поля "{type}"',
        "it": 'Tipo di campo non valido "{type}"',
    },
    "field_exists": {
        "en": 'Field "{name}" already exists',
        "ru": 'Поле "{name}" уже существует',
        "ua": 'Поле "{name}" вже існує',
        "it": 'Il campo "{name}" esiste già',
    },
    "unknown_field": {
        "en": 'Unknown field name "{name}"',
        "ru": 'Неизвестное имя поля "{name}"',
        "ua": 'Невідоме ім\'я поля "{name}"',
        "it": 'Nome di campo sconosciuto "{name}"',
    },
    "email_or_phone_column": {
        "en": "field_names must contain email or phone",
        "ru": "field_names должен содержать email или phone",
        "ua": "field_names має містити email або phone",
        "it": "field_names deve contenere email o phone",
    },
    "duplicate_columns": {
        "en": "field_names contains duplicates",
        "ru": "field_names содержит повторы",
        "ua": "field_names містить повтори",
        "it": "field_names contiene duplicati",
    },
    "too_many_rows": {
        "en": "Too many contacts: {rows}, at most {limit} per call",
        "ru": "Слишком много контактов: {rows}, не более {limit} за вызов",
        "ua": "Забагато контактів: {rows}, не більше {limit} за виклик",
        "it": "Troppi contatti: {rows}, al massimo {limit} per chiamata",
    },
    "data_not_2d": {
        "en": "data must be a two-dimensional array",
        "ru": "data должен быть двумерным массивом",
        "ua": "data має бути двовимірним масивом",
        "it": "data deve essere un array bidimensionale",
    },
    "row_too_long": {
        "en": "data row has more values than field_names",
        "ru": "в строке data больше значений, чем в field_names",
        "ua": "у рядку data більше значень, ніж у field_names",
        "it": "la riga di data ha più valori di field_names",
    },
    "invalid_list_ids": {
        "en": 'Invalid list ids "{value}"',
        "ru": 'Неверные id списков "{value}"',
        "ua": 'Невірні id списків "{value}"',
        "it": 'Id di lista non validi "{value}"',
    },
    "invalid_email": {
        "en": 'Invalid email "{email}"',
        "ru": 'Неверный email "{email}"',
        "ua": 'Невірний email "{email}"',
        "it": 'Email non valida "{email}"',
    },
    "task_not_found": {
        "en": 'Task "{task_uuid}" not found',
        "ru": 'Задача "{task_uuid}" не найдена',
        "ua": 'Завдання "{task_uuid}" не знайдено',
        "it": 'Attività "{task_uuid}" non trovata',
    },
    "hook_not_found": {
        "en": 'Hook "{hook_url}" not found',
        "ru": 'Обработчик "{hook_url}" не найден',
        "ua": 'Обробник "{hook_url}" не знайдено',
        "it": 'Webhook "{hook_url}" non trovato',
    },
    # importContacts per-row log: errors (the row is not imported) ...
    "row_no_email": {
        "en": "This row has no email",
        "ru": "В строке нет email",
        "ua": "У рядку немає email",
        "it": "Questa riga non ha email",
    },
    "row_role_email": {
        "en": 'Role address "{email}" is not imported',
        "ru": 'Ролевой адрес "{email}" не импортирован',
        "ua": 'Рольову адресу "{email}" не імпортовано',
        "it": 'L\'indirizzo di ruolo "{email}" non è stato importato',
    },
    "row_too_many_tags": {
        "en": "At most 10 tags per contact",
        "ru": "Не более 10 меток на контакт",
        "ua": "Не більше 10 міток на контакт",
        "it": "Al massimo 10 tag per contatto",
    },
    "row_bad_status": {
        "en": 'Invalid email_status "{status}"',
        "ru": 'Неверный email_status "{status}"',
        "ua": 'Невірний email_status "{status}"',
        "it": 'email_status non valido "{status}"',
    },
    # ... and warnings (the row IS imported; something in it was not applied).
    "warn_status_kept": {
        "en": 'The status of "{email}" is "{status}" and cannot be changed by import',
        "ru": 'Статус "{email}" — "{status}", его нельзя изменить импортом',
        "ua": 'Статус "{email}" — "{status}", його не можна змінити імпортом',
        "it": 'Lo stato di "{email}" è "{status}" e non può essere cambiato con l\'importazione',
    },
    "warn_list_unsubscribed": {
        "en": '"{email}" is unsubscribed from list {list_ids} and stays unsubscribed',
        "ru": '"{email}" отписан от списка {list_ids} и остаётся отписанным',
        "ua": '"{email}" відписаний від списку {list_ids} і залишається відписаним',
        "it": '"{email}" è disiscritto dalla lista {list_ids} e resta disiscritto',
    },
    # Documented verbatim in English on every language's page: never translated.
    "mixed_get_post": dict.fromkeys(LANGUAGES, "Call to a member function getMessage() on boolean"),
    "no_confirmation_letters": dict.fromkeys(
        LANGUAGES, 'These list ids="{list_ids}" has no confirmation letters'
    ),
}


def render(key: str, lang: str, params: dict[str, Any] | None = None) -> str:
    """The text of message `key` in `lang` (English for a language the catalog lacks)."""
    texts = CATALOG[key]
    template = texts.get(lang) or texts[DEFAULT_LANGUAGE]
    return template.format(**(params or {}))
